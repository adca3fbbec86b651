"""The suite's configuration: the typed schema (schema.py) and how it is loaded and overridden (loading.py)."""
from .loading import (DEFAULT_CONFIG_PATH, apply_env_overrides, get_config, get_config_or_exit, influxdb_token,
                      load_config, parse_config)
from .schema import (CacheConfig, ConfigError, ContentionConfig, EndpointThresholds, InfluxConfig, LoadShapeConfig,
                     MonitoringConfig, OracleConfig, ServiceConfig, SpikeShape, Stage, StagedShape, StepShape,
                     SuiteConfig, TestDataConfig, ThresholdsConfig, WaitTimeConfig)

__all__ = ["DEFAULT_CONFIG_PATH", "apply_env_overrides", "get_config", "get_config_or_exit", "influxdb_token",
           "load_config", "parse_config", "CacheConfig", "ConfigError", "ContentionConfig", "EndpointThresholds",
           "InfluxConfig", "LoadShapeConfig", "MonitoringConfig", "OracleConfig", "ServiceConfig", "SpikeShape",
           "Stage", "StagedShape", "StepShape", "SuiteConfig", "TestDataConfig", "ThresholdsConfig", "WaitTimeConfig"]
