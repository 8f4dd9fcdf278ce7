"""A client's registered scope is now the most it may ask for, and a client that registers itself is registered
for every scope (the MCP SDKs name only the first challenge's scope, then step up). Until now the scope was never
enforced, and self-registered clients were stored with what they named, or "read": give them every scope."""


def up(migrator, db):
    db.execute_sql("UPDATE clients SET scope = 'read write' WHERE dynamically_registered AND scope = 'read'")
