"""Entry point: `python -m product_service --help`."""
import sys

from .cli import main

sys.exit(main())
