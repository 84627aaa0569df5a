//! Host bindings of every `sluice:connector` version the host serves, side by side.
//!
//! One module per version, each with its own `bindgen!` (as Zed's extension host does for its
//! extension API): [`v0_2`] is the current world (`wit/connector.wit`, 0.2.1; it also serves
//! 0.2.0 components, which link to it by semver), whose imports
//! [`crate::host`] implements; [`v0_1_0`] is the frozen copy (`wit/versions/0.1.0`), whose
//! imports delegate to the current ones. All versions are linked into the one linker (their
//! interfaces have distinct versioned names). The version of a component is the one of the
//! `sluice:connector/connector@X` instance it exports ([`world_of`]); [`ConnectorPre`] and
//! [`Connector`] call its exports in the current types, so the rest of the host never sees a
//! version.
//!
//! Every import is async (an http fetch must not block a tokio worker) and trappable (the
//! host stops a cancelled run at its next host call by trapping).
//!
//! Adding a version: copy the current WIT to `wit/versions/X/`, add a module for it here
//! converting to the new current types, bump `wit/connector.wit`, and add a case to
//! [`World`], [`ConnectorPre`] and [`Connector`]. A version that only adds (a function, an
//! interface) bumps the patch number instead (0.2.0 → 0.2.1): wasmtime links a component's
//! imports and finds its export by semver, so the components of the earlier patch versions
//! run on the current module unchanged.

pub(crate) mod v0_1_0;
pub(crate) mod v0_2;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store};

use crate::error::LoadError;
use crate::host::HostState;

/// The current world's generated modules: the host's import implementations and the manifest
/// checks are written against these types.
pub(crate) use latest::{exports, sluice};
/// The current world's bindings.
pub(crate) use v0_2 as latest;

use latest::exports::sluice::connector::connector as wit;
use latest::sluice::connector::types as wit_types;

/// The current WIT package version: what the SDK and new components target.
pub const WIT_VERSION: &str = latest::VERSION;
/// Every package version the host serves, newest first.
pub const WIT_VERSIONS: &[&str] = &[v0_2::VERSION, v0_1_0::VERSION];
/// The package every connector import and export belongs to.
pub const WIT_PACKAGE: &str = "sluice:connector";

/// A served version of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum World {
    V0_1_0,
    V0_2,
}

impl World {
    /// The served world a component built against package version `v` uses: same major, or
    /// for 0.x the same minor (semver's compatibility, as the component model links).
    fn of(v: &str) -> Option<Self> {
        let compatible = |served: &str| {
            let (s, g): (Vec<&str>, Vec<&str>) =
                (served.split('.').collect(), v.split('.').collect());
            g.len() == 3
                && g.iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && if s[0] == "0" {
                    g[0] == "0" && g[1] == s[1]
                } else {
                    g[0] == s[0]
                }
        };
        if compatible(v0_2::VERSION) {
            Some(Self::V0_2)
        } else if compatible(v0_1_0::VERSION) {
            Some(Self::V0_1_0)
        } else {
            None
        }
    }
}

/// Links the imports of every served version.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_2::ConnectorPlugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v0_1_0::ConnectorPlugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Checks a component's imports and exports against the served worlds: it must export
/// `sluice:connector/connector@X` for a served X, and import nothing but interfaces of the
/// same version (and WASI). Returns the world and the exact version it was built against.
pub(crate) fn world_of(
    engine: &Engine,
    component: &Component,
) -> Result<(World, String), LoadError> {
    let ty = component.component_type();
    let export = ty
        .exports(engine)
        .find_map(|(name, item)| {
            let v = name
                .strip_prefix(WIT_PACKAGE)?
                .strip_prefix("/connector@")?;
            matches!(item.ty, ComponentItem::ComponentInstance(_)).then(|| v.to_string())
        })
        .ok_or_else(|| {
            LoadError::IncompatibleWorld(format!(
                "does not export {WIT_PACKAGE}/connector: not a Sluice connector"
            ))
        })?;
    let served = || {
        WIT_VERSIONS
            .iter()
            .map(|v| format!("{WIT_PACKAGE}@{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let world = World::of(&export).ok_or_else(|| {
        LoadError::IncompatibleWorld(format!(
            "built against {WIT_PACKAGE}@{export}, this host serves {}",
            served()
        ))
    })?;
    for (name, _) in ty.imports(engine) {
        if name.starts_with("wasi:") {
            continue;
        }
        let Some(v) = name
            .strip_prefix(WIT_PACKAGE)
            .and_then(|r| r.strip_prefix('/'))
            .map(|r| r.split_once('@').map(|x| x.1).unwrap_or(""))
        else {
            return Err(LoadError::UndeclaredImport(name.to_string()));
        };
        if World::of(v) != Some(world) {
            return Err(LoadError::IncompatibleWorld(format!(
                "imports {name} but exports {WIT_PACKAGE}/connector@{export}: a component \
                 targets one version ({})",
                served()
            )));
        }
    }
    Ok((world, export))
}

/// A component linked for its world, ready to instantiate.
#[derive(Clone)]
pub(crate) enum ConnectorPre {
    V0_1_0(v0_1_0::ConnectorPluginPre<HostState>),
    V0_2(v0_2::ConnectorPluginPre<HostState>),
}

impl ConnectorPre {
    /// Finds the exports of `world` in a linked component.
    pub fn new(world: World, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match world {
            World::V0_1_0 => Self::V0_1_0(v0_1_0::ConnectorPluginPre::new(pre)?),
            World::V0_2 => Self::V0_2(v0_2::ConnectorPluginPre::new(pre)?),
        })
    }

    /// A new instance in `store`.
    pub async fn instantiate_async(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Connector> {
        Ok(match self {
            Self::V0_1_0(pre) => Connector::V0_1_0(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => Connector::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

/// An instance of a connector, whatever its version; its exports in the current types.
pub(crate) enum Connector {
    V0_1_0(v0_1_0::ConnectorPlugin),
    V0_2(v0_2::ConnectorPlugin),
}

impl Connector {
    pub async fn call_manifest(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<wit::ConnectorManifest> {
        match self {
            Self::V0_1_0(p) => Ok(p
                .sluice_connector_connector()
                .call_manifest(store)
                .await?
                .into()),
            Self::V0_2(p) => p.sluice_connector_connector().call_manifest(store).await,
        }
    }

    // `&String`: what the generated calls take (`json` is a `string`).
    #[allow(clippy::ptr_arg)]
    pub async fn call_validate(
        &self,
        store: &mut Store<HostState>,
        config: &String,
    ) -> wasmtime::Result<Result<String, wit_types::ConnectorError>> {
        match self {
            Self::V0_1_0(p) => Ok(p
                .sluice_connector_connector()
                .call_validate(store, config)
                .await?
                .map_err(Into::into)),
            Self::V0_2(p) => {
                p.sluice_connector_connector()
                    .call_validate(store, config)
                    .await
            }
        }
    }

    #[allow(clippy::ptr_arg)]
    pub async fn call_discover(
        &self,
        store: &mut Store<HostState>,
        config: &String,
    ) -> wasmtime::Result<Result<Vec<wit_types::StreamSpec>, wit_types::ConnectorError>> {
        match self {
            Self::V0_1_0(p) => Ok(p
                .sluice_connector_connector()
                .call_discover(store, config)
                .await?
                .map(|s| s.into_iter().map(Into::into).collect())
                .map_err(Into::into)),
            Self::V0_2(p) => {
                p.sluice_connector_connector()
                    .call_discover(store, config)
                    .await
            }
        }
    }

    pub async fn call_sync(
        &self,
        store: &mut Store<HostState>,
        request: &wit::SyncRequest,
    ) -> wasmtime::Result<Result<(), wit_types::ConnectorError>> {
        match self {
            Self::V0_1_0(p) => Ok(p
                .sluice_connector_connector()
                .call_sync(store, &request.into())
                .await?
                .map_err(Into::into)),
            Self::V0_2(p) => {
                p.sluice_connector_connector()
                    .call_sync(store, request)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::World;

    #[test]
    fn versions_map_to_served_worlds_by_semver() {
        assert_eq!(World::of("0.1.0"), Some(World::V0_1_0));
        assert_eq!(World::of("0.1.7"), Some(World::V0_1_0));
        assert_eq!(World::of("0.2.0"), Some(World::V0_2));
        assert_eq!(World::of("0.2.1"), Some(World::V0_2));
        assert_eq!(World::of("0.2.3"), Some(World::V0_2));
        for refused in ["0.3.0", "9.0.0", "1.0.0", "0.1", "", "0.1.x", "0.2.0-rc1"] {
            assert_eq!(World::of(refused), None, "{refused:?}");
        }
    }
}
