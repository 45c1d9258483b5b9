"""Pure ASGI middleware, one per module: HEAD served as GET without a body (`head`), and the cap on
request bodies (`body_limit`)."""
