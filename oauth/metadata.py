"""Discovery documents: authorization server metadata (RFC 8414) and protected resource metadata (RFC 9728)."""
from flask import Blueprint

from models import SCOPES, Client
from oauth import issuer

bp = Blueprint("metadata", __name__)


@bp.get("/.well-known/oauth-authorization-server")
def authorization_server():
    """Describe this authorization server; every endpoint and the issuer come from one string."""
    base = issuer()
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorization/new",
        "token_endpoint": f"{base}/oauth/token",
        "registration_endpoint": f"{base}/oauth/clients",
        "revocation_endpoint": f"{base}/oauth/revocation",
        "introspection_endpoint": f"{base}/oauth/introspection",
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", *Client.SECRET_METHODS],
        "revocation_endpoint_auth_methods_supported": ["none", *Client.SECRET_METHODS],
        "scopes_supported": list(SCOPES),
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
    }


@bp.get("/.well-known/oauth-protected-resource")
def protected_resource():
    """Describe the built-in API as a resource whose tokens this server issues."""
    return {"resource": issuer(), "authorization_servers": [issuer()], "bearer_methods_supported": ["header"],
            "scopes_supported": list(SCOPES), "resource_name": "Keyfob API"}
