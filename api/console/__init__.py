"""The console's static files (HTML, JavaScript, CSS), served by `api.routes.console`."""
