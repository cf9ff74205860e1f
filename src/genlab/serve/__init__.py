"""`genlab serve`: trained runs behind an HTTP API with dynamic batching and streaming, a browser
page, and Prometheus metrics. See docs/serving.md. The app is genlab.serve.app.create_app; the kinds' routes
build on genlab.serve.schemas and genlab.serve.served, so this package's __init__ imports nothing."""
