// Package admin is the relay's administration HTTP API: an administrator
// logs in with HTTP Basic, receives a short-lived JWT, and manages relay keys
// with it.
//
// Routes (all under /admin/; a host mounts the Handler under its own prefix
// with http.StripPrefix):
//
//	POST   /admin/login                 HTTP Basic → {"access_token","token_type":"bearer","expires_in"}
//	POST   /admin/logout                revokes the presented token until it expires (204)
//	GET    /admin/api-keys              list: ?name=&enabled=&tier=&cursor=&limit=&include_deleted=
//	POST   /admin/api-keys              create (201); the response carries the plaintext "key" once
//	GET    /admin/api-keys/{id}         one key; a deleted key is 404 unless ?include_deleted=true
//	PATCH  /admin/api-keys/{id}         change any subset of the fields
//	DELETE /admin/api-keys/{id}         revoke for good (204); the record is kept for usage history
//	POST   /admin/api-keys/{id}/rotate  new secret, optional {"grace_period_seconds": N}
//
// Every route but login takes "Authorization: Bearer <token>". More routes
// (usage reports, upstream status…) are mounted behind the same check with
// (*Handler).Handle.
//
// Every error, including 404 and 405, has the Anthropic API's error shape
// (see internal/apierror), so the SDKs and tools that parse Anthropic's
// errors parse these too.
//
// Request bodies are JSON objects of at most 1 MiB. The Content-Type is not
// checked, because the documented curl examples (curl -d) send
// application/x-www-form-urlencoded. Unknown fields are refused rather than
// ignored: a misspelt "enabeld": false that silently did nothing would leave
// a key enabled that an administrator believes disabled.
package admin
