"""LACP (Lee & Byun, ICCV 2021), the base locator of the paper, rebuilt from the authors' public code."""
