"""Resource servers: a client the operator registers with `keyfob client add NAME --resource-server URL` serves the
resource at URL, which tokens may then be bound to, and may introspect the tokens bound to it, and only those. No
client registered before is one. A nullable string, added in place, and a partial index of the few rows that hold
one: every authorization request lists them."""
from migrations import add_columns


def up(migrator, db):
    add_columns(db, "clients", {"resource_server": "VARCHAR(2048)"})
    db.execute_sql("CREATE INDEX IF NOT EXISTS clients_resource_servers ON clients (id) WHERE resource_server IS NOT NULL")
