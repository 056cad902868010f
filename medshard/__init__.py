"""medshard: streaming shards and GPU loaders for biomedical imaging deep learning."""

__version__ = "0.1.0"
__all__ = ["__version__"]
