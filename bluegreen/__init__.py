"""bluegreen: blue-green deployments for web apps on ordinary Linux hosts behind nginx."""

__version__ = "0.1.0"
