"""The core: validates, decides and calls backends. Knows no surface."""
