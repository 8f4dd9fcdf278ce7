#!/usr/bin/env bash
# The flow an MCP client goes through, each step with curl, against a running Keyfob: read its metadata
# (RFC 8414), register a public client (RFC 7591), make a PKCE pair (RFC 7636), get a code, exchange it for a
# token, call /api/me, revoke the token (RFC 7009), and see it refused.
#
#     examples/curl_flow.sh [KEYFOB_URL]                                     # you approve in your browser
#     KEYFOB_PASSWORD=… examples/curl_flow.sh --username NAME [KEYFOB_URL]   # curl signs in and approves
#
# KEYFOB_URL is where Keyfob answers, http://127.0.0.1:8000 unless given. Needs curl, and python3 for JSON,
# URLs and the forms' hidden inputs. Any failed step ends the script with one line on standard error.
set -euo pipefail

# The client's loopback redirect URI (RFC 8252 §7.3). Nothing listens there: the code is read from the address.
REDIRECT_URI=http://127.0.0.1:9999/callback
USAGE="usage: [KEYFOB_PASSWORD=…] $0 [--username NAME] [KEYFOB_URL]"

main() {
    read_arguments "$@"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    discover
    register_client
    make_pkce_pair
    build_authorization_url
    if [[ -n $SIGN_IN_AS ]]; then
        approve_with_curl
    else
        approve_in_browser
    fi
    exchange_code
    call_api
    revoke_token
    call_api_with_revoked_token
}

read_arguments() {
    SIGN_IN_AS="" BASE=http://127.0.0.1:8000
    while (($#)); do
        case $1 in
            --username) [[ $# -ge 2 ]] || fail "--username needs a name ($USAGE)"; SIGN_IN_AS=$2; shift 2 ;;
            -h | --help) echo "$USAGE"; exit 0 ;;
            -*) fail "unknown option $1 ($USAGE)" ;;
            *) BASE=${1%/}; shift ;;
        esac
    done
    if [[ -n $SIGN_IN_AS && -z ${KEYFOB_PASSWORD:-} ]]; then
        fail "--username $SIGN_IN_AS needs the password in the environment: KEYFOB_PASSWORD=… $0 --username $SIGN_IN_AS"
    fi
}

discover() {
    request "reading Keyfob's metadata" "$BASE/.well-known/oauth-authorization-server"
    expect 200 "reading Keyfob's metadata at $BASE"
    ISSUER=$(json_field issuer <<<"$BODY")
    AUTHORIZATION_ENDPOINT=$(json_field authorization_endpoint <<<"$BODY")
    TOKEN_ENDPOINT=$(json_field token_endpoint <<<"$BODY")
    REGISTRATION_ENDPOINT=$(json_field registration_endpoint <<<"$BODY")
    REVOCATION_ENDPOINT=$(json_field revocation_endpoint <<<"$BODY")
    [[ -n $ISSUER && -n $REGISTRATION_ENDPOINT ]] || fail "$BASE does not answer with Keyfob's metadata"
    echo "1. Keyfob's metadata names its issuer, $ISSUER, and its endpoints"
}

register_client() {
    request "registering a client" "$REGISTRATION_ENDPOINT" --header "Content-Type: application/json" \
        --data "{\"client_name\": \"curl_flow.sh\", \"redirect_uris\": [\"$REDIRECT_URI\"]}"
    expect 201 "registering a client"
    CLIENT_ID=$(json_field client_id <<<"$BODY")
    echo "2. Registered a public client (no secret): client_id $CLIENT_ID"
}

make_pkce_pair() {
    VERIFIER=$(random_string)
    CHALLENGE=$(printf %s "$VERIFIER" | python3 -c 'import base64, hashlib, sys
print(base64.urlsafe_b64encode(hashlib.sha256(sys.stdin.buffer.read()).digest()).decode().rstrip("="))')
    echo "3. PKCE: the verifier $VERIFIER stays here; its S256 challenge $CHALLENGE goes in the URL"
}

build_authorization_url() {
    STATE=$(random_string)
    # resource: the built-in API is the issuer (RFC 8707); without it, a Keyfob with one KEYFOB_RESOURCES server
    # would bind the token to that server, and /api/me would refuse it.
    AUTHORIZATION_URL=$(with_query "$AUTHORIZATION_ENDPOINT" response_type=code "client_id=$CLIENT_ID" \
        "redirect_uri=$REDIRECT_URI" "code_challenge=$CHALLENGE" code_challenge_method=S256 scope=read \
        "resource=$ISSUER" "state=$STATE")
}

approve_in_browser() {
    echo "4. Open this address in your browser (sign in if asked) and press Approve:"
    echo ""
    echo "       $AUTHORIZATION_URL"
    echo ""
    echo "   Your browser then goes to $REDIRECT_URI?code=… and shows an error, as nothing listens there."
    echo "   Paste that whole address here and press Enter, within a minute (the code lives 60 seconds):"
    local address=""
    read -r address || true
    address=${address//[[:space:]]/}
    [[ -n $address ]] || fail "no address pasted (to approve without a browser: KEYFOB_PASSWORD=… $0 --username NAME)"
    take_code "$address"
}

# What the browser does, with curl and a cookie jar: open the authorization URL, sign in when sent to (Keyfob then
# returns to the request), press Approve. On a loopback issuer, approving also signs out (README: Sessions).
approve_with_curl() {
    echo "4. Approving as $SIGN_IN_AS with curl, through Keyfob's sign-in and consent forms"
    browse "opening the authorization URL" "$AUTHORIZATION_URL"
    if [[ $STATUS == 302 && $LOCATION == */session/new ]]; then
        sign_in
        browse "opening the consent page" "$LOCATION"
    fi
    expect 200 "opening the consent page"
    local fields
    fields=$(form_fields /oauth/authorization <<<"$BODY")
    [[ -n $fields ]] || fail "the consent page has no form that posts to /oauth/authorization"
    browse "approving" "$ISSUER/oauth/authorization" --data "$fields" --data decision=approve
    expect 302 "approving"
    take_code "$LOCATION"
}

sign_in() {
    browse "opening the sign-in page" "$LOCATION"
    expect 200 "opening the sign-in page"
    local fields
    fields=$(form_fields /session <<<"$BODY")
    [[ -n $fields ]] || fail "the sign-in page has no form that posts to /session"
    # The password reaches curl on its standard input, so that ps never shows it.
    browse "signing in" "$ISSUER/session" --data "$fields" --data-urlencode "username=$SIGN_IN_AS" \
        --data-urlencode password@- < <(printf %s "$KEYFOB_PASSWORD")
    [[ $STATUS != 401 ]] || fail "signing in as $SIGN_IN_AS was refused: check the username and KEYFOB_PASSWORD"
    expect 302 "signing in as $SIGN_IN_AS"
}

# take_code ADDRESS: the code from the redirect to REDIRECT_URI, once its state and issuer (RFC 9207) are ours.
take_code() {
    local address=$1 error
    [[ $address == "$REDIRECT_URI?"* ]] || fail "expected an address that starts $REDIRECT_URI?, got: ${address:0:100}"
    error=$(query_param error "$address")
    [[ -z $error ]] || fail "Keyfob answered $error: $(query_param error_description "$address")"
    [[ $(query_param state "$address") == "$STATE" ]] || fail "the address carries another state than this run's"
    [[ $(query_param iss "$address") == "$ISSUER" ]] || fail "the address names another issuer than $ISSUER"
    CODE=$(query_param code "$address")
    [[ -n $CODE ]] || fail "the address has no code"
    echo "   Keyfob sent back a code (sealed, valid for 60 seconds): ${CODE:0:16}…"
}

exchange_code() {
    request "exchanging the code" "$TOKEN_ENDPOINT" --data grant_type=authorization_code \
        --data-urlencode "code=$CODE" --data-urlencode "redirect_uri=$REDIRECT_URI" \
        --data-urlencode "client_id=$CLIENT_ID" --data-urlencode "code_verifier=$VERIFIER"
    expect 200 "exchanging the code"
    TOKEN=$(json_field access_token <<<"$BODY")
    echo "5. Exchanged the code and the verifier for a token: ${TOKEN:0:12}… (scope $(json_field scope <<<"$BODY"))"
}

call_api() {
    request "calling /api/me" "$ISSUER/api/me" --header "Authorization: Bearer $TOKEN"
    expect 200 "calling /api/me with the token"
    echo "6. GET /api/me with the token: $BODY"
}

revoke_token() {
    request "revoking the token" "$REVOCATION_ENDPOINT" --data-urlencode "token=$TOKEN" \
        --data-urlencode "client_id=$CLIENT_ID"
    expect 200 "revoking the token"
    echo "7. Revoked the token"
}

call_api_with_revoked_token() {
    request "calling /api/me with the revoked token" "$ISSUER/api/me" --header "Authorization: Bearer $TOKEN"
    expect 401 "calling /api/me with the revoked token"
    echo "8. GET /api/me with the revoked token: $BODY"
    echo "The revoked token answers 401."
}

# request WHAT URL [CURL_OPTION…]: one request, redirects not followed. Sets STATUS, LOCATION (absolute) and BODY.
request() {
    local what=$1 url=$2 written
    shift 2
    written=$(curl --silent --max-time 10 --output "$WORK/body" --write-out '%{http_code} %{redirect_url}' \
        "$@" "$url") || fail "$what: no answer from $url (is Keyfob running there?)"
    STATUS=${written%% *} LOCATION=${written#* } BODY=$(<"$WORK/body")
}

# browse WHAT URL [CURL_OPTION…]: a request as the browser sends it, with its cookies.
browse() {
    request "$@" --cookie "$WORK/cookies" --cookie-jar "$WORK/cookies"
}

# expect STATUS WHAT: fail unless the last answer had STATUS, naming the OAuth error it carried, if any.
expect() {
    [[ $STATUS == "$1" ]] && return
    [[ $STATUS != 429 ]] || fail "$2: Keyfob's rate limit says wait (HTTP 429): try again in a minute"
    local error
    error=$(json_field error_description <<<"$BODY")
    fail "$2: expected HTTP $1, got $STATUS${error:+ ($error)}"
}

# json_field NAME < JSON: a top-level field of a JSON object, or nothing.
json_field() {
    python3 -c 'import json, sys
try:
    print(json.load(sys.stdin).get(sys.argv[1], ""))
except (ValueError, AttributeError):
    pass' "$1"
}

# query_param NAME URL: the first value of NAME in the URL's query, or nothing.
query_param() {
    python3 -c 'import sys, urllib.parse
print(urllib.parse.parse_qs(urllib.parse.urlsplit(sys.argv[2]).query).get(sys.argv[1], [""])[0])' "$1" "$2"
}

# with_query URL NAME=VALUE…: the URL with these parameters as its query, encoded.
with_query() {
    python3 -c 'import sys, urllib.parse
print(sys.argv[1] + "?" + urllib.parse.urlencode([tuple(pair.split("=", 1)) for pair in sys.argv[2:]]))' "$@"
}

# form_fields ACTION < PAGE: the hidden inputs (CSRF token and the request) of the page's form that posts to
# ACTION, as an encoded form body.
form_fields() {
    python3 -c 'import sys, urllib.parse
from html.parser import HTMLParser

class Form(HTMLParser):
    def __init__(self, action):
        super().__init__()
        self.action, self.inside, self.fields = action, False, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("action") == self.action
        elif tag == "input" and self.inside and attrs.get("type") == "hidden":
            self.fields.append((attrs["name"], attrs.get("value") or ""))

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False

form = Form(sys.argv[1])
form.feed(sys.stdin.read())
print(urllib.parse.urlencode(form.fields))' "$1"
}

random_string() {
    python3 -c 'import secrets; print(secrets.token_urlsafe(32))'
}

fail() {
    echo "curl_flow.sh: $*" >&2
    exit 1
}

main "$@"
