"""The names the suite is built from, defined once: tasks, user types, shapes, clients."""
from __future__ import annotations

# Happy-path and edge-case tasks (scenario_weights in config.yaml), in the order config.yaml lists them.
TASKS = (
    "browse_all_products", "get_products_by_category", "get_product_details", "buy_product",
    "update_stock", "hit_invalid_path", "health_check", "edge_case",
)
# Expected negative paths (negative_weights in config.yaml).
NEGATIVE_TASKS = (
    "details_unknown_product", "buy_unknown_product", "buy_beyond_stock",
    "invalid_buy_payload", "invalid_stock_payload", "missing_category",
)
# User types with a weight in config.yaml (user_types); ContentionUser runs only when named or tagged.
USER_TYPES = ("ProductServiceUser", "BrowserUser", "ShopperUser", "AdminUser")
CONTENTION_USER = "ContentionUser"
ALL_USER_TYPES = (*USER_TYPES, CONTENTION_USER)
# Which tasks each user type runs (weights from config.yaml); a type whose tasks all weigh 0 is refused.
USER_TYPE_TASKS = {
    "ProductServiceUser": TASKS + NEGATIVE_TASKS,
    "BrowserUser": ("browse_all_products", "get_products_by_category", "get_product_details", "health_check"),
    "ShopperUser": ("browse_all_products", "get_product_details", "buy_product", "buy_unknown_product",
                    "buy_beyond_stock", "invalid_buy_payload"),
    "AdminUser": ("browse_all_products", "update_stock", "invalid_stock_payload", "health_check"),
}
SHAPES = ("staged", "spike", "step")
CLIENTS = ("fast", "requests")
TAGS = ("browse", "category", "details", "purchase", "admin", "error", "health", "edge_case", "negative", "contention")
