//! Reads the Spin manifest (`spin.toml`, manifest version 2): which components exist,
//! where their `.wasm` lives and which HTTP routes they serve. One manifest drives both
//! `spin up` and `imgfleet up`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The component that is the resize function: queued jobs are checked with its logic when
/// submitted, and its routes are documented with its parameters.
pub const RESIZE_COMPONENT: &str = "resize";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub components: BTreeMap<String, PathBuf>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: RoutePattern,
    pub component: String,
}

/// Spin's route syntax: an exact path, or a prefix followed by `/...` (wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePattern {
    Exact(String),
    Prefix(String),
}

impl RoutePattern {
    fn parse(route: &str) -> Self {
        match route.strip_suffix("/...") {
            Some(prefix) => Self::Prefix(prefix.to_string()),
            None => Self::Exact(route.to_string()),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    spin_manifest_version: u32,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: RawRoute,
    component: String,
}

/// `route = "/path"`, or Spin's `route = { private = true }` for a component that is only
/// called from inside (the host's auth-check).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private { private: bool },
}

#[derive(Deserialize)]
struct RawComponent {
    source: String,
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("in manifest {}", path.display()))
    }

    /// Parses manifest text; component sources are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let raw: Raw = toml::from_str(text)?;
        if raw.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version {} is not supported (expected 2)",
                raw.spin_manifest_version
            );
        }
        let components = raw
            .component
            .into_iter()
            .map(|(id, c)| (id, base.join(c.source)))
            .collect::<BTreeMap<_, _>>();
        let mut routes = Vec::new();
        for t in raw.trigger.http {
            if !components.contains_key(&t.component) {
                bail!(
                    "a route names component `{}`, which is not defined",
                    t.component
                );
            }
            match t.route {
                RawRoute::Path(route) => routes.push(Route {
                    pattern: RoutePattern::parse(&route),
                    component: t.component,
                }),
                RawRoute::Private { private: true } => {}
                RawRoute::Private { private: false } => {
                    bail!(
                        "component `{}`: a route table must say private = true",
                        t.component
                    )
                }
            }
        }
        Ok(Self { components, routes })
    }

    /// Looks for every component's file (by its file name) in `dir` instead of where the
    /// manifest says: for deployments that ship the manifest and the `.wasm` files apart.
    pub fn with_component_dir(mut self, dir: &Path) -> Self {
        for source in self.components.values_mut() {
            if let Some(name) = source.file_name() {
                *source = dir.join(name);
            }
        }
        self
    }

    /// The component serving `path`: exact routes win over wildcards, then the longest prefix.
    pub fn route(&self, path: &str) -> Option<&str> {
        let exact = self
            .routes
            .iter()
            .find(|r| r.pattern == RoutePattern::Exact(path.to_string()));
        let best = exact.or_else(|| {
            self.routes
                .iter()
                .filter(|r| r.pattern.matches(path))
                .max_by_key(|r| match &r.pattern {
                    RoutePattern::Prefix(p) | RoutePattern::Exact(p) => p.len(),
                })
        });
        best.map(|r| r.component.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        spin_manifest_version = 2
        [application]
        name = "x"
        [[trigger.http]]
        route = "/v1/resize"
        component = "resize"
        [[trigger.http]]
        route = "/hog/..."
        component = "hog"
        [component.resize]
        source = "target/wasm/resize.wasm"
        [component.hog]
        source = "hog.wasm"
    "#;

    #[test]
    fn parses_components_and_routes() {
        let m = Manifest::parse(TEXT, Path::new("/app")).unwrap();
        assert_eq!(
            m.components["resize"],
            PathBuf::from("/app/target/wasm/resize.wasm")
        );
        assert_eq!(m.route("/v1/resize"), Some("resize"));
        assert_eq!(m.route("/v1/resize/x"), None);
        assert_eq!(m.route("/hog/spin"), Some("hog"));
        assert_eq!(m.route("/hog"), Some("hog"));
        assert_eq!(m.route("/hogwash"), None);
    }

    #[test]
    fn component_dir_overrides_where_files_are_found() {
        let m = Manifest::parse(TEXT, Path::new("/app"))
            .unwrap()
            .with_component_dir(Path::new("/opt/wasm"));
        assert_eq!(
            m.components["resize"],
            PathBuf::from("/opt/wasm/resize.wasm")
        );
        assert_eq!(m.components["hog"], PathBuf::from("/opt/wasm/hog.wasm"));
    }

    #[test]
    fn rejects_unknown_components_and_versions() {
        let bad = TEXT.replace("component = \"hog\"", "component = \"nope\"");
        assert!(Manifest::parse(&bad, Path::new(".")).is_err());
        let old = TEXT.replace("spin_manifest_version = 2", "spin_manifest_version = 1");
        assert!(Manifest::parse(&old, Path::new(".")).is_err());
    }

    #[test]
    fn the_repository_manifest_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let m = Manifest::load(&path).unwrap();
        assert_eq!(m.route("/v1/resize"), Some("resize"));
        assert!(m.components.contains_key("auth-check"));
        assert!(m.routes.iter().all(|r| r.component != "auth-check"));
    }

    #[test]
    fn private_components_are_loaded_but_not_routed() {
        let text = format!(
            "{TEXT}\n[[trigger.http]]\nroute = {{ private = true }}\ncomponent = \"auth\"\n[component.auth]\nsource = \"a.wasm\"\n"
        );
        let m = Manifest::parse(&text, Path::new("/app")).unwrap();
        assert!(m.components.contains_key("auth"));
        assert!(m.routes.iter().all(|r| r.component != "auth"));
        let public = text.replace("private = true", "private = false");
        assert!(Manifest::parse(&public, Path::new("/app")).is_err());
    }
}
