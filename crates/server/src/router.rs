//! The one route table of the node API. Upstream registers handlers on a
//! go-restful container in `InstallAuthNotRequiredHandlers` and
//! `InstallAuthRequiredHandlers` (`pkg/kubelet/server/server.go`); here every
//! route is a row of [`ROUTES`], and anything else is a 404 (a known path
//! with another method is a 405 with an `Allow` header).

use hyper::Method;

/// Which handler a route runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteId {
    /// `/healthz`
    Healthz,
    /// `/healthz/{check}`
    HealthzCheck,
    /// `/pods`
    Pods,
    /// `/metrics`
    Metrics,
    /// `/configz`
    Configz,
    /// `/containerLogs/{namespace}/{pod}/{container}`
    ContainerLogs,
    /// `/stats/summary`
    StatsSummary,
    /// `/exec/{namespace}/{pod}[/{uid}]/{container}`
    Exec,
    /// `/attach/{namespace}/{pod}[/{uid}]/{container}`
    Attach,
    /// `/portForward/{namespace}/{pod}[/{uid}]`
    PortForward,
    /// `/run/{namespace}/{pod}[/{uid}]/{container}`
    Run,
    /// `/metrics/resource`
    MetricsResource,
    /// `/metrics/probes`
    MetricsProbes,
}

/// One path segment of a route pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A literal segment.
    Lit(&'static str),
    /// A parameter, named for documentation.
    Param(&'static str),
}

/// One row of the route table.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// The handler.
    pub id: RouteId,
    /// The metrics bucket (upstream's `addMetricsBucketMatcher` names): the
    /// only values the `path` label of the HTTP metrics takes, besides `other`.
    pub name: &'static str,
    /// The accepted methods. `HEAD` answers as `GET` without a body.
    pub methods: &'static [Method],
    /// The path, split on `/`.
    pub pattern: &'static [Segment],
}

const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];

const GET_POST: &[Method] = &[Method::GET, Method::POST];

/// Every route the server answers. Deliberately absent: `/logs`,
/// `/debug/*`, `/checkpoint`, `/runningpods`, `/metrics/cadvisor`.
pub const ROUTES: &[Route] = &[
    Route {
        id: RouteId::Healthz,
        name: "healthz",
        methods: GET_HEAD,
        pattern: &[Segment::Lit("healthz")],
    },
    Route {
        id: RouteId::HealthzCheck,
        name: "healthz",
        methods: GET_HEAD,
        pattern: &[Segment::Lit("healthz"), Segment::Param("check")],
    },
    Route {
        id: RouteId::Pods,
        name: "pods",
        methods: GET_HEAD,
        pattern: &[Segment::Lit("pods")],
    },
    Route {
        id: RouteId::Metrics,
        name: "metrics",
        methods: GET_HEAD,
        pattern: &[Segment::Lit("metrics")],
    },
    Route {
        id: RouteId::MetricsResource,
        name: "metrics/resource",
        methods: GET_HEAD,
        pattern: &[Segment::Lit("metrics"), Segment::Lit("resource")],
    },
    Route {
        id: RouteId::MetricsProbes,
        name: "metrics/probes",
        methods: GET_HEAD,
        pattern: &[Segment::Lit("metrics"), Segment::Lit("probes")],
    },
    Route {
        id: RouteId::Configz,
        name: "configz",
        methods: GET_HEAD,
        pattern: &[Segment::Lit("configz")],
    },
    Route {
        id: RouteId::ContainerLogs,
        name: "containerLogs",
        methods: GET_HEAD,
        pattern: &[
            Segment::Lit("containerLogs"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("containerName"),
        ],
    },
    Route {
        id: RouteId::StatsSummary,
        name: "stats",
        // Upstream's stats web service registers GET and POST.
        methods: &[Method::GET, Method::HEAD, Method::POST],
        pattern: &[Segment::Lit("stats"), Segment::Lit("summary")],
    },
    Route {
        id: RouteId::Exec,
        name: "exec",
        methods: GET_POST,
        pattern: &[
            Segment::Lit("exec"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("containerName"),
        ],
    },
    Route {
        id: RouteId::Exec,
        name: "exec",
        methods: GET_POST,
        pattern: &[
            Segment::Lit("exec"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("uid"),
            Segment::Param("containerName"),
        ],
    },
    Route {
        id: RouteId::Attach,
        name: "attach",
        methods: GET_POST,
        pattern: &[
            Segment::Lit("attach"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("containerName"),
        ],
    },
    Route {
        id: RouteId::Attach,
        name: "attach",
        methods: GET_POST,
        pattern: &[
            Segment::Lit("attach"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("uid"),
            Segment::Param("containerName"),
        ],
    },
    Route {
        id: RouteId::PortForward,
        name: "portForward",
        methods: GET_POST,
        pattern: &[
            Segment::Lit("portForward"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
        ],
    },
    Route {
        id: RouteId::PortForward,
        name: "portForward",
        methods: GET_POST,
        pattern: &[
            Segment::Lit("portForward"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("uid"),
        ],
    },
    // Upstream `getRun`: POST only.
    Route {
        id: RouteId::Run,
        name: "run",
        methods: &[Method::POST],
        pattern: &[
            Segment::Lit("run"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("containerName"),
        ],
    },
    Route {
        id: RouteId::Run,
        name: "run",
        methods: &[Method::POST],
        pattern: &[
            Segment::Lit("run"),
            Segment::Param("podNamespace"),
            Segment::Param("podID"),
            Segment::Param("uid"),
            Segment::Param("containerName"),
        ],
    },
];

/// The result of matching a request against [`ROUTES`].
#[derive(Debug)]
pub(crate) enum Match<'a> {
    /// A route and its raw (still percent-encoded) parameters.
    Found(&'static Route, Vec<&'a str>),
    /// The path matches a route but not with this method.
    MethodNotAllowed(&'static Route),
    /// No route has this path.
    NotFound,
}

/// Matches `method path` against the table.
pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Match<'a> {
    let Some(rest) = path.strip_prefix('/') else {
        return Match::NotFound;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut path_match = None;
    for r in ROUTES {
        if r.pattern.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let matches = r.pattern.iter().zip(&segments).all(|(p, s)| match p {
            Segment::Lit(l) => l == s,
            Segment::Param(_) => {
                params.push(*s);
                true
            }
        });
        if !matches {
            continue;
        }
        if r.methods.contains(method) {
            return Match::Found(r, params);
        }
        path_match.get_or_insert(r);
    }
    match path_match {
        Some(r) => Match::MethodNotAllowed(r),
        None => Match::NotFound,
    }
}

/// The metrics bucket of a method: a standard method or `other` (upstream's
/// `getMetricMethodBucket`).
pub(crate) fn method_bucket(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_and_refuses() {
        assert!(
            matches!(route(&Method::GET, "/pods"), Match::Found(r, _) if r.id == RouteId::Pods)
        );
        match route(&Method::GET, "/containerLogs/ns/p/c") {
            Match::Found(r, params) => {
                assert_eq!(r.id, RouteId::ContainerLogs);
                assert_eq!(params, vec!["ns", "p", "c"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            route(&Method::POST, "/pods"),
            Match::MethodNotAllowed(_)
        ));
        assert!(matches!(
            route(&Method::POST, "/stats/summary"),
            Match::Found(..)
        ));
        for p in [
            "/exec/ns/p/c",
            "/exec/ns/p/uid/c",
            "/attach/ns/p/c",
            "/portForward/ns/p",
            "/portForward/ns/p/uid",
        ] {
            for m in [Method::GET, Method::POST] {
                assert!(matches!(route(&m, p), Match::Found(..)), "{m} {p}");
            }
        }
        for p in [
            "/exec/ns/p",
            "/exec/ns/p/uid/c/x",
            "/portForward/ns",
            "/run/ns/p",
            "/logs/",
            "/debug/pprof/",
            "/pods/",
            "/",
            "pods",
        ] {
            assert!(matches!(route(&Method::GET, p), Match::NotFound), "{p}");
        }
        assert!(matches!(
            route(&Method::GET, "/containerLogs/ns/p"),
            Match::NotFound
        ));
        for p in ["/run/ns/p/c", "/run/ns/p/uid/c"] {
            assert!(matches!(route(&Method::POST, p), Match::Found(r, _) if r.id == RouteId::Run));
            assert!(matches!(route(&Method::GET, p), Match::MethodNotAllowed(_)));
        }
        for (p, id) in [
            ("/metrics/resource", RouteId::MetricsResource),
            ("/metrics/probes", RouteId::MetricsProbes),
        ] {
            assert!(matches!(route(&Method::GET, p), Match::Found(r, _) if r.id == id));
        }
    }

    #[test]
    fn every_route_has_a_fixed_bucket_name() {
        for r in ROUTES {
            assert!(!r.name.is_empty());
            // Only upstream's POST-only `/run` has no GET.
            assert!(r.methods.contains(&Method::GET) || r.id == RouteId::Run);
            assert!(matches!(r.pattern.first(), Some(Segment::Lit(_))));
        }
        assert_eq!(
            method_bucket(&Method::from_bytes(b"BREW").unwrap()),
            "other"
        );
    }
}
