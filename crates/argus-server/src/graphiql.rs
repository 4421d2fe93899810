//! The GraphiQL page and its assets, served from the binary: nothing is loaded from a public
//! CDN, so the page works on an air-gapped network and runs only code shipped with the server.
//! The assets are the npm distributions of graphiql 3.8.3 and React 18.3.1, kept gzip-compressed
//! (`assets/graphiql/`, licences in `LICENSES.md` there) and sent as such.

use actix_web::{HttpResponse, http::header, web};

/// The page: React, ReactDOM and GraphiQL from `/graphiql/assets/`, pointed at `/graphql`.
/// The bearer token goes in GraphiQL's headers editor (`{"Authorization": "Bearer …"}`).
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<title>Argus Tchap — GraphiQL</title>
<style>body { margin: 0; } #graphiql { height: 100vh; }</style>
<link rel="stylesheet" href="/graphiql/assets/graphiql.min.css" />
<script src="/graphiql/assets/react.production.min.js"></script>
<script src="/graphiql/assets/react-dom.production.min.js"></script>
<script src="/graphiql/assets/graphiql.min.js"></script>
</head>
<body>
<div id="graphiql">Loading…</div>
<script src="/graphiql/assets/init.js"></script>
</body>
</html>
"#;

/// Starts GraphiQL on the page (a file of its own, so the page needs no inline script).
const INIT: &str = r#"(function () {
  var fetcher = GraphiQL.createFetcher({ url: '/graphql' });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultHeaders: '{"Authorization": "Bearer <token from argus-tchap token>"}',
    defaultEditorToolsVisibility: 'headers'
  }));
})();
"#;

/// One asset: its name under `/graphiql/assets/`, media type, and gzip-compressed bytes.
const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/graphiql.min.js.gz"),
    ),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("../assets/graphiql/graphiql.min.css.gz")),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/react.production.min.js.gz"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/react-dom.production.min.js.gz"),
    ),
];

/// `GET /graphiql`.
pub(crate) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // Scripts, styles and requests: this server only.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:",
        ))
        .body(PAGE)
}

/// `GET /graphiql/assets/{name}`.
pub(crate) async fn asset(name: web::Path<String>) -> HttpResponse {
    if name.as_str() == "init.js" {
        return HttpResponse::Ok().content_type("text/javascript; charset=utf-8").body(INIT);
    }
    match ASSETS.iter().find(|(n, ..)| *n == name.as_str()) {
        Some((_, media_type, gzipped)) => HttpResponse::Ok()
            .content_type(*media_type)
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
            .body(*gzipped),
        None => HttpResponse::NotFound().finish(),
    }
}
