"""The dashboard: an HTTP server (server.py), JSON views over the Store (api.py) and one
self-contained page (page.html, page.js, page.css), served as they are."""
