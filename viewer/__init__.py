"""The search page: results you can see, each image with its detected boxes drawn (`make up` serves it on :8300)."""
