"""hemacnn: CNN classification of bone-marrow cell images (Whitehead & Ramirez; Matek 2021)."""

__version__ = "0.1.0"
