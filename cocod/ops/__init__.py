"""Op specs users write in flows: parameters only (their behaviour lives in executors)."""
