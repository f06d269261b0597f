//! An HTTP trigger's route: a method and a path whose segments are literal or
//! `{name}` parameters (`GET /rooms/{room}/climate`). Pure.

use std::fmt;

/// Methods a route may name.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    segments: Vec<Segment>,
    /// Requests a second for all callers together, and the burst
    /// (`rate_per_s`, `burst` beside `http`); `None`: no limit of its own.
    pub rate: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl Route {
    /// Parses `"METHOD /path/{param}"`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Route, String> {
        let (method, path) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("{text:?} is not a method and a path, e.g. \"GET /rooms/{{room}}/climate\""))?;
        let method = method.trim();
        if !METHODS.contains(&method) {
            return Err(format!("{method:?} is not a method a route takes: {}", METHODS.join(", ")));
        }
        let path = path.trim();
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(format!("path {path:?} must start with '/' and hold no query, fragment or space"));
        }
        let mut segments = Vec::new();
        for part in path.split('/').skip(1) {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid || segments.contains(&Segment::Param(name.to_owned())) {
                    return Err(format!("path parameter {{{name}}}: a name of letters, digits and '_', once each"));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if part.contains(['{', '}']) {
                return Err(format!("path segment {part:?}: a parameter is a whole segment, {{name}}"));
            } else if segments.is_empty() && ["api", "healthz", "metrics"].contains(&part) {
                return Err(format!("path /{part}: the gateway's own routes (/healthz, /metrics, /api/...)"));
            } else {
                segments.push(Segment::Literal(part.to_owned()));
            }
        }
        Ok(Route { method: method.to_owned(), segments, rate: None })
    }

    /// The parameters, by name, if `method` and `path` are this route's.
    pub fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if method != self.method {
            return None;
        }
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => params.push((name.clone(), part.to_owned())),
            }
        }
        Some(params)
    }

    /// Whether some request would match both: two functions may not share one.
    pub fn overlaps(&self, other: &Route) -> bool {
        self.method == other.method
            && self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|pair| match pair {
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                _ => true,
            })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.method)?;
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            match s {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Param(p) => write!(f, "/{{{p}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_matches_its_method_and_path_and_names_its_parameters() {
        let r = Route::parse(" GET /rooms/{room}/climate ").unwrap();
        assert_eq!(r.to_string(), "GET /rooms/{room}/climate");
        assert_eq!(r.matches("GET", "/rooms/kitchen/climate"), Some(vec![("room".into(), "kitchen".into())]));
        for (method, path) in [
            ("POST", "/rooms/kitchen/climate"),
            ("GET", "/rooms//climate"),
            ("GET", "/rooms/a/b/climate"),
            ("GET", "/rooms/kitchen"),
        ] {
            assert_eq!(r.matches(method, path), None, "{method} {path}");
        }
        assert_eq!(Route::parse("POST /").unwrap().matches("POST", "/"), Some(vec![]));
    }

    #[test]
    fn bad_routes_say_what_is_wrong_and_overlaps_are_found() {
        for (text, says) in [
            ("/rooms", "not a method and a path"),
            ("FETCH /rooms", "not a method"),
            ("GET rooms", "must start with '/'"),
            ("GET /rooms?x=1", "no query"),
            ("GET /rooms/{}", "a name of letters"),
            ("GET /a/{x}/{x}", "once each"),
            ("GET /rooms/r{x}", "a whole segment"),
            ("GET /metrics", "the gateway's own routes"),
            ("GET /api/things", "the gateway's own routes"),
        ] {
            let err = Route::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let a = Route::parse("GET /rooms/{room}").unwrap();
        assert!(a.overlaps(&Route::parse("GET /rooms/kitchen").unwrap()));
        assert!(!a.overlaps(&Route::parse("POST /rooms/kitchen").unwrap()));
        assert!(!a.overlaps(&Route::parse("GET /rooms/kitchen/climate").unwrap()));
    }
}
