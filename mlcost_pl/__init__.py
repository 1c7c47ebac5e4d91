"""mlcost_pl: Lightning callbacks, plugins and recipes that cut what it costs to train and serve models."""

__version__ = "0.1.0"
