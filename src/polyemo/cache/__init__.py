"""The feature cache: encoder outputs stored once per (audio content, encoder identity).

:func:`features` is the entry point: it returns features aligned with a manifest, reading
the cache and computing only what is missing. :class:`FeatureStore` is the storage of one
encoder identity (safetensors shards plus a Parquet index).
"""

from polyemo.cache.extract import FeatureResult, features
from polyemo.cache.store import CacheError, FeatureStore, default_cache_root

__all__ = ["CacheError", "FeatureResult", "FeatureStore", "default_cache_root", "features"]
