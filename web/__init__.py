"""The web layer: FastAPI app with the user's settings page, the admin overview, the JSON API,
the cron trigger endpoint and health checks. It calls the same service layer as the CLI
(services.facade.Services); it holds no scheduling logic and no SQL of its own."""
