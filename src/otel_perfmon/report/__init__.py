"""Reports: cheap capture on the request path, then build and render on the background worker."""
