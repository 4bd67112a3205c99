"""r1pipe: the DeepSeek-R1 post-training recipe as resumable stages."""
__version__ = "0.1.0"
