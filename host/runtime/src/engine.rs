//! The wasmtime engines of the process (Cranelift, optimizing; and Winch, the baseline compiler
//! first loads are served on), the compile cache, and calls into plugins.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Strategy,
    UpdateDeadline,
};

use crate::bindings::exports::sluice::connector::connector as wit;
use crate::bindings::{Connector, ConnectorPre};
use crate::cache::{CacheStats, Lease, Leases, Tier};
use crate::error::{CallError, ErrorCode, LoadError};
use crate::host::{CallLabels, CallState, HostState, RecordSink, Secrets, Stop};
use crate::manifest::{Manifest, StreamSpec};
use crate::outbound::{Outbound, OutboundConfig};
use crate::policy::{Destinations, OperatorPolicy};

/// How often the epoch ticks; deadlines and cancellation are checked at this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most core instances one component may create. Components from wasm-component-ld have a few;
/// componentize-py's about a dozen. More is refused when the component loads.
pub(crate) const MAX_CORE_INSTANCES: usize = 64;
/// Most linear memories one component may define (one per core instance at most in practice:
/// the toolchains we support use one or two). More is refused when the component loads, so that
/// no component can take the pool's memory slots from the others.
pub(crate) const MAX_MEMORIES: usize = 4;
/// Most tables one component may define.
pub(crate) const MAX_TABLES: usize = 16;
/// First loads that may be compiling or waiting for the compiler at once; the compiles
/// themselves run one at a time (`Inner::compiling`).
const COMPILE_SLOTS: usize = 2;
/// The compile cache's default cap, MiB (`SLUICE_COMPILE_CACHE_MIB`): an interpreter
/// component's optimized artifact is ~35 MiB, its baseline one ~45 MiB. Below the chart's 1 GiB
/// cache volume, with room for the scratch files of compiles under way.
pub const DEFAULT_COMPILE_CACHE_MIB: u64 = 768;
/// The default cap of a compile child's data memory, MiB (`SLUICE_COMPILE_MEMORY_MIB`): the
/// optimized compile of python-issues.wasm (19 MB, componentize-py) needed at most 384 MiB of
/// `RLIMIT_DATA`, js-issues.wasm (12 MB) 384-416 (`prlimit --data`, 2 cores); plus a margin.
pub const DEFAULT_COMPILE_MEMORY_MIB: u32 = 512;

/// How long a growth of a call that already holds part of the plugin memory budget waits for
/// more before it is refused ([`RuntimeConfig::memory_growth_wait`]): long enough for a short
/// call (a `validate`, a `discover`) to end and give its memory back, short enough that two calls
/// that each wait for the other's memory fail fast.
pub const DEFAULT_MEMORY_GROWTH_WAIT: Duration = Duration::from_secs(5);

/// Operator settings for the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached (created if missing).
    pub cache_dir: PathBuf,
    /// The most linear memory any plugin call may use, in MiB.
    pub max_memory_mib: u32,
    /// Memory for plugins that do not ask for an amount, in MiB.
    pub default_memory_mib: u32,
    /// Plugin calls running at once; more wait for a slot (within their deadline). Sizes the
    /// pooling allocator's slots, which are shared fairly between plugins ([`crate::fair`]: one
    /// plugin's calls hold at most three quarters of them).
    pub max_concurrent_calls: u32,
    /// Linear memory and tables (in MiB) that all plugin calls together may hold. A call takes
    /// from it what its memories and tables grow to (the initial pages of its component
    /// included), not its limit, and gives it back when it ends; a call's limit is capped at
    /// the budget, and one plugin's calls hold at most three quarters of it ([`crate::fair`]).
    /// See [`crate::budget`] for the waits when it is short.
    pub memory_budget_mib: u32,
    /// How long a growth may wait for the budget when the call already holds part of it;
    /// past that the growth is refused and the call fails with [`CallError::MemoryBudget`].
    pub memory_growth_wait: Duration,
    /// Plugin files larger than this are refused before they are read, in bytes.
    pub max_plugin_bytes: u64,
    /// A compile in the child process that takes longer is killed and the plugin refused.
    pub compile_timeout: Duration,
    /// Per-line and per-call log limits (the per-run budget comes with each call).
    pub log: crate::host::LogLimits,
    /// Writes `/tmp/perf-<pid>.map` so that `perf` names plugin functions.
    pub perf_map: bool,
    /// Compile in a child process: this executable, run as
    /// `<exe> plugin compile <in.wasm> <out.cwasm> --memory-mib N --max-calls N`
    /// (see [`Runtime::precompile`]). Keeps the compiler's memory and code pages out of the
    /// service, and a compiler crash out of it. `None`: compile in this process.
    pub compiler: Option<PathBuf>,
    /// The most data memory a compile child may map, in MiB (`RLIMIT_DATA`: heap and private
    /// writable mappings); past it the compile fails and the plugin is refused with an error
    /// that names `SLUICE_COMPILE_MEMORY_MIB`. 0: no limit.
    pub compile_memory_mib: u32,
    pub policy: OperatorPolicy,
    pub outbound: OutboundConfig,
    /// When set, a plugin file loads only with a `{file}.minisig` signature by one of these
    /// keys ([`crate::signing`], `SLUICE_TRUSTED_KEYS`).
    pub trusted_keys: Option<crate::signing::TrustedKeys>,
    /// Tiered compilation (`serve` sets it): a plugin without a cached optimized artifact is
    /// compiled with Winch, the baseline compiler, and published at once; its optimized code
    /// is compiled in the background (one plugin at a time, at lower priority on half the
    /// cores, within twice [`Self::compile_timeout`]) and replaces the baseline code when
    /// ready ([`Plugin::tier`]). Off: every load compiles optimized code before it publishes.
    pub tiered: bool,
    /// The most the compile cache may hold, in bytes: past it, the least recently used
    /// artifacts not in use are removed (`SLUICE_COMPILE_CACHE_MIB`).
    pub cache_max_bytes: u64,
}

impl RuntimeConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_memory_mib: 256,
            default_memory_mib: 64,
            max_concurrent_calls: 32,
            memory_budget_mib: 192,
            memory_growth_wait: DEFAULT_MEMORY_GROWTH_WAIT,
            max_plugin_bytes: 64 << 20,
            compile_timeout: Duration::from_secs(60),
            log: crate::host::LogLimits::default(),
            perf_map: false,
            compiler: None,
            compile_memory_mib: DEFAULT_COMPILE_MEMORY_MIB,
            policy: OperatorPolicy::default(),
            outbound: OutboundConfig::default(),
            trusted_keys: None,
            tiered: false,
            cache_max_bytes: DEFAULT_COMPILE_CACHE_MIB << 20,
        }
    }
}

/// The plugin runtime: load components, call them.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// An engine of one compiler tier, with its linker and cache key.
struct TierEngine {
    engine: Engine,
    linker: Linker<HostState>,
    /// Distinguishes the artifacts of this tier and engine settings in the cache.
    key: String,
}

impl TierEngine {
    fn new(config: &RuntimeConfig, tier: Tier) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(config, tier))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        crate::bindings::add_to_linker(&mut linker)?;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tier.as_str().hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        let key = format!("{:016x}", h.finish());
        Ok(Self {
            engine,
            linker,
            key,
        })
    }
}

/// The engine settings of a tier: the same for the service and its compile child.
fn engine_config(config: &RuntimeConfig, tier: Tier) -> Config {
    let mut wc = Config::new();
    wc.epoch_interruption(true)
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(config)))
        .strategy(match tier {
            Tier::Baseline => Strategy::Winch,
            Tier::Optimized => Strategy::Cranelift,
        });
    if tier == Tier::Baseline {
        // Winch compiles the functions; Cranelift still compiles the trampolines between host
        // and guest (thousands in an interpreter component): quickly, not well.
        wc.cranelift_opt_level(wasmtime::OptLevel::None)
            .cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
    }
    if config.perf_map {
        wc.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wc
}

/// Compiles a component into an artifact of `tier` for engines with `config`'s settings: what
/// `sluice plugin compile`, the compile child of `serve`, runs.
pub fn compile_artifact(
    config: &RuntimeConfig,
    tier: Tier,
    bytes: &[u8],
) -> Result<Vec<u8>, LoadError> {
    let compile = |e: wasmtime::Error| LoadError::Compile(format!("{e:#}"));
    // Instances are never made here: no pool of slots (its stacks are data memory that would
    // count against the child's limit). The allocator is not part of an artifact's
    // compatibility (wasmtime checks target, flags, tunables and features).
    let mut wc = engine_config(config, tier);
    wc.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Engine::new(&wc)
        .map_err(compile)?
        .precompile_component(bytes)
        .map_err(compile)
}

/// A plugin version's code on one tier, linked, ready to instantiate.
struct Code {
    pre: ConnectorPre,
    engine: Engine,
    tier: Tier,
    /// Keeps the artifact from collection while the code may run.
    _lease: Lease,
    /// Bytes of memories and tables an instance of this code starts with (its initial pages),
    /// measured at each instantiation; 0 until the first. A call reserves it from the memory
    /// budget in one step before it instantiates (see `call_unmeasured`).
    initial_bytes: AtomicUsize,
}

/// A component loaded from an artifact of `tier`.
struct Loaded {
    component: Component,
    tier: Tier,
    lease: Lease,
}

struct Inner {
    optimized: TierEngine,
    /// Present when [`RuntimeConfig::tiered`].
    baseline: Option<TierEngine>,
    outbound: Arc<Outbound>,
    config: RuntimeConfig,
    /// One unit per pooled instance slot, shared fairly between plugins ([`crate::fair`]).
    call_slots: Arc<crate::fair::FairPool>,
    /// [`RuntimeConfig::memory_budget_mib`], taken as calls' memories grow.
    memory_budget: Arc<crate::budget::MemoryBudget>,
    /// One permit per compile allowed at once.
    compile_slots: tokio::sync::Semaphore,
    /// One background optimizing compile at a time.
    optimize_slot: tokio::sync::Semaphore,
    /// Held by every compile (baseline and optimized, first loads and background, in a child
    /// or in this process) while it runs: one compile at a time in the process, so compilers'
    /// memory (hundreds of MiB for an interpreter component) never adds up.
    compiling: std::sync::Mutex<()>,
    /// Artifacts in use: never collected.
    leases: Arc<Leases>,
    /// Makes the scratch file names of concurrent compiles distinct.
    scratch_seq: AtomicU64,
}

impl Runtime {
    pub fn new(mut config: RuntimeConfig) -> anyhow::Result<Self> {
        let optimized = TierEngine::new(&config, Tier::Optimized)?;
        // A second engine (and pool of slots: address space, no memory until used) only when
        // first loads may be served on baseline code.
        let baseline = if config.tiered {
            Some(TierEngine::new(&config, Tier::Baseline)?)
        } else {
            None
        };
        config.cache_dir = private_cache_dir(&config.cache_dir)?;
        spawn_epoch_ticker(
            std::iter::once(&optimized)
                .chain(baseline.as_ref())
                .map(|t| t.engine.weak())
                .collect(),
        );
        let outbound = Arc::new(Outbound::new(
            config.policy.clone(),
            config.outbound.clone(),
        )?);
        Ok(Self {
            inner: Arc::new(Inner {
                optimized,
                baseline,
                outbound,
                call_slots: call_slots(config.max_concurrent_calls),
                memory_budget: crate::budget::MemoryBudget::new(
                    config.memory_budget_mib,
                    config.memory_growth_wait,
                ),
                compile_slots: tokio::sync::Semaphore::new(COMPILE_SLOTS),
                optimize_slot: tokio::sync::Semaphore::new(1),
                compiling: std::sync::Mutex::new(()),
                leases: Arc::new(Leases::default()),
                scratch_seq: AtomicU64::new(0),
                config,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Bytes of the plugin memory budget that calls hold now: the linear memories and tables
    /// of the calls under way (whole 64 KiB pages), 0 when none runs.
    pub fn plugin_memory_in_use_bytes(&self) -> u64 {
        self.inner.memory_budget.in_use_bytes()
    }

    /// The plugin memory budget's 64 KiB pages in use, and the calls waiting for pages.
    pub fn plugin_memory_pages(&self) -> crate::fair::PoolStats {
        self.inner.memory_budget.stats()
    }

    /// The pooled call slots in use, and the calls waiting for one.
    pub fn call_slots(&self) -> crate::fair::PoolStats {
        self.inner.call_slots.stats()
    }

    /// Loads a plugin file: read, check, compile (or reuse the cache), link, read its manifest.
    /// A file over [`RuntimeConfig::max_plugin_bytes`] is refused before it is read.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let cap = self.inner.config.max_plugin_bytes;
        let io = |e: std::io::Error| LoadError::Io(format!("{}: {e}", path.display()));
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        if size > cap {
            return Err(LoadError::TooLarge { size, max: cap });
        }
        // Read at most one byte past the cap: the file may have grown since.
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut bytes = Vec::with_capacity(size as usize);
        use tokio::io::AsyncReadExt;
        file.take(cap + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(io)?;
        if bytes.len() as u64 > cap {
            return Err(LoadError::TooLarge {
                size: bytes.len() as u64,
                max: cap,
            });
        }
        if let Some(keys) = &self.inner.config.trusted_keys {
            let sig_path = crate::signing::signature_path(path);
            let signature = read_signature(&sig_path)
                .await
                .map_err(|e| LoadError::Io(e.to_string()))?;
            let sig_name = sig_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let key = keys.verify(&bytes, signature.as_deref(), &sig_name)?;
            tracing::debug!(file = %path.display(), key = %key, "plugin signature verified");
        }
        self.load_bytes(bytes, Some(path.to_path_buf())).await
    }

    /// Loads a plugin from bytes (see [`Runtime::load_file`]).
    pub async fn load_bytes(
        &self,
        bytes: Vec<u8>,
        path: Option<PathBuf>,
    ) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        check_component_header(&bytes)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        let bytes = Arc::new(bytes);
        let (loaded, cached) = match self.cached_best(&sha256) {
            Some(l) => (l, true),
            None => {
                // A compile waits for a compile slot; loads served by the cache never do.
                let _slot = self
                    .inner
                    .compile_slots
                    .acquire()
                    .await
                    .map_err(|_| LoadError::Compile("runtime closed".into()))?;
                let this = self.clone();
                let sha = sha256.clone();
                let b = bytes.clone();
                tokio::task::spawn_blocking(move || this.compile_first(&b, &sha))
                    .await
                    .map_err(|e| LoadError::Compile(e.to_string()))??
            }
        };
        let (world, wit_version) =
            crate::bindings::world_of(loaded.component.engine(), &loaded.component)?;
        let imports = self.import_names(&loaded.component);
        let tier = loaded.tier;
        let code = Arc::new(self.link(loaded, world)?);
        let manifest = self.read_manifest(&code).await?;
        let code = Arc::new(ArcSwap::new(code));
        if tier == Tier::Baseline {
            self.optimize_later(Arc::downgrade(&code), bytes, sha256.clone(), world);
        }
        let info = PluginInfo {
            id: manifest.id.clone(),
            version: manifest.version.clone(),
            sha256,
            size,
            path,
            wit_version,
            imports,
            compiled_from_cache: cached,
            load_ms: started.elapsed().as_secs_f64() * 1e3,
            loaded_at: SystemTime::now(),
        };
        Ok(Plugin {
            runtime: self.clone(),
            info: Arc::new(info),
            manifest: Arc::new(manifest),
            code,
        })
    }

    /// The engine of a tier; `None` for the baseline tier of a runtime without tiering.
    fn tier_engine(&self, tier: Tier) -> Option<&TierEngine> {
        match tier {
            Tier::Optimized => Some(&self.inner.optimized),
            Tier::Baseline => self.inner.baseline.as_ref(),
        }
    }

    /// Links a loaded component for its world.
    fn link(&self, loaded: Loaded, world: crate::bindings::World) -> Result<Code, LoadError> {
        let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
        let te = self
            .tier_engine(loaded.tier)
            .ok_or_else(|| LoadError::Link("no engine for this tier".into()))?;
        let pre = te.linker.instantiate_pre(&loaded.component).map_err(link)?;
        Ok(Code {
            pre: ConnectorPre::new(world, pre).map_err(link)?,
            engine: te.engine.clone(),
            tier: loaded.tier,
            _lease: loaded.lease,
            initial_bytes: AtomicUsize::new(0),
        })
    }

    /// Where the compiled artifact of these bytes for `tier` lives in the cache.
    fn artifact_path(&self, sha256: &str, tier: Tier) -> Option<PathBuf> {
        let te = self.tier_engine(tier)?;
        Some(
            self.inner
                .config
                .cache_dir
                .join(crate::cache::artifact_name(sha256, tier, &te.key)),
        )
    }

    /// The cached optimized artifact of these bytes, else (tiered) the cached baseline one.
    fn cached_best(&self, sha256: &str) -> Option<Loaded> {
        self.cached(sha256, Tier::Optimized)
            .or_else(|| self.cached(sha256, Tier::Baseline))
    }

    /// The cached artifact of these bytes for `tier`, if a usable one exists; marks it used.
    fn cached(&self, sha256: &str, tier: Tier) -> Option<Loaded> {
        let te = self.tier_engine(tier)?;
        let path = self.artifact_path(sha256, tier)?;
        let lease = self.inner.leases.take_existing(&path)?;
        // SAFETY: the cache directory is the host's own; artifacts in it were written by
        // `precompile_component` with an engine of the same compatibility hash (checked here).
        match unsafe { Component::deserialize_file(&te.engine, &path) } {
            Ok(component) => Some(Loaded {
                component,
                tier,
                lease,
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), "dropping unusable cached artifact: {e:#}");
                None
            }
        }
    }

    /// The first code of a plugin without a cached artifact: baseline when tiered (optimized
    /// when Winch cannot compile it), else optimized. Returns whether the cache served (another
    /// load of the same bytes compiled them while this one waited for its slot).
    fn compile_first(&self, bytes: &[u8], sha256: &str) -> Result<(Loaded, bool), LoadError> {
        if let Some(l) = self.cached_best(sha256) {
            return Ok((l, true));
        }
        if self.inner.baseline.is_some() {
            match self.compile(bytes, sha256, Tier::Baseline, false) {
                Ok(l) => return Ok((l, false)),
                // Killed for want of memory: Cranelift would need more, now; try again later.
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => tracing::warn!(
                    sha256,
                    "baseline compile (Winch) failed; compiling optimized code instead: {e}"
                ),
            }
        }
        self.compile(bytes, sha256, Tier::Optimized, false)
            .map(|l| (l, false))
    }

    /// Compiles `bytes` for `tier` into the cache and loads the artifact; `background` (the
    /// optimizing compile after a baseline load) runs the compiler at lower priority on half
    /// the cores. The cache is collected to its cap afterwards.
    fn compile(
        &self,
        bytes: &[u8],
        sha256: &str,
        tier: Tier,
        background: bool,
    ) -> Result<Loaded, LoadError> {
        let (Some(te), Some(path)) = (self.tier_engine(tier), self.artifact_path(sha256, tier))
        else {
            return Err(LoadError::Compile(format!("no {tier} engine")));
        };
        let engine = &te.engine;
        // Taken before the file exists: no collection removes it before it is loaded.
        let lease = self.inner.leases.take(&path);
        // The one compile of the process at a time (a panicked holder left nothing to repair).
        let one_at_a_time = self
            .inner
            .compiling
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let component = if let Some(exe) = &self.inner.config.compiler {
            self.compile_in_child(exe, bytes, &path, tier, background)?;
            // SAFETY: written just now by a process with this engine's settings; a mismatch is
            // caught by the compatibility check of `deserialize_file`. Loading also checks the
            // component against the pooling allocator's per-component caps: a component with
            // too many memories, tables or instances is refused here. No in-process retry: a
            // compile in this process would have no deadline.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(LoadError::Compile(format!("{e:#}")));
                }
            }
        } else {
            let artifact = engine
                .precompile_component(bytes)
                .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
            let tmp = path.with_extension(format!("tmp{}", self.scratch_suffix()));
            if let Err(e) =
                std::fs::write(&tmp, &artifact).and_then(|_| std::fs::rename(&tmp, &path))
            {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(path = %path.display(), "cannot cache compiled artifact: {e}");
            }
            // Prefer the file: it is mapped, not copied onto the heap.
            // SAFETY: both were produced just now by this engine.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => c,
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                    unsafe { Component::deserialize(engine, &artifact) }
                        .map_err(|e| LoadError::Compile(format!("{e:#}")))?
                }
            }
        };
        drop(one_at_a_time);
        crate::memory::release_freed();
        self.collect_cache(None);
        Ok(Loaded {
            component,
            tier,
            lease,
        })
    }

    /// Compiles the optimized code of a plugin loaded on baseline code in the background and
    /// swaps it in when ready: calls that started keep their instance, new calls get the
    /// optimized one. One such compile at a time; skipped when the plugin was dropped
    /// (replaced or removed) before its turn. An interrupted compile ([`LoadError::Interrupted`]:
    /// the kernel's out-of-memory killer) is tried again after [`retry_delay`], at most
    /// [`OPTIMIZE_ATTEMPTS`] times; meanwhile, and after, the plugin serves on baseline code.
    fn optimize_later(
        &self,
        code: Weak<ArcSwap<Code>>,
        bytes: Arc<Vec<u8>>,
        sha256: String,
        world: crate::bindings::World,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            for attempt in 1..=OPTIMIZE_ATTEMPTS {
                let Some(e) = this.optimize_once(&code, &bytes, &sha256, world).await else {
                    return;
                };
                if attempt == OPTIMIZE_ATTEMPTS {
                    tracing::warn!(
                        sha256,
                        attempt,
                        "optimizing compile failed again; the plugin stays on baseline code: {e}"
                    );
                    return;
                }
                let wait = retry_delay(attempt);
                tracing::warn!(
                    sha256,
                    attempt,
                    retry_in_s = wait.as_secs(),
                    "optimizing compile interrupted; the plugin serves on baseline code meanwhile: {e}"
                );
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// One optimizing compile of [`Runtime::optimize_later`]; `Some` when it is worth another try.
    async fn optimize_once(
        &self,
        code: &Weak<ArcSwap<Code>>,
        bytes: &Arc<Vec<u8>>,
        sha256: &str,
        world: crate::bindings::World,
    ) -> Option<LoadError> {
        let Ok(_slot) = self.inner.optimize_slot.acquire().await else {
            return None;
        };
        if code.strong_count() == 0 {
            tracing::debug!(sha256, "plugin dropped before its optimizing compile");
            return None;
        }
        let started = Instant::now();
        let rt = self.clone();
        let (sha, bytes) = (sha256.to_string(), bytes.clone());
        let result = tokio::task::spawn_blocking(move || {
            let loaded = match rt.cached(&sha, Tier::Optimized) {
                Some(l) => l,
                None => rt.compile(&bytes, &sha, Tier::Optimized, true)?,
            };
            rt.link(loaded, world)
        })
        .await
        .map_err(|e| LoadError::Compile(e.to_string()))
        .and_then(|r| r);
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        match (result, code.upgrade()) {
            (Ok(optimized), Some(code)) => {
                // The same component starts with the same pages, whatever compiled it.
                let initial = code.load().initial_bytes.load(Ordering::Relaxed);
                optimized.initial_bytes.store(initial, Ordering::Relaxed);
                code.store(Arc::new(optimized));
                tracing::info!(sha256, compile_ms, "plugin optimized code swapped in");
                None
            }
            (Ok(_), None) => {
                tracing::debug!(sha256, "plugin dropped during its optimizing compile");
                None
            }
            (Err(e), _) if e.is_transient() => Some(e),
            (Err(e), _) => {
                tracing::warn!(
                    sha256,
                    "optimizing compile failed; the plugin stays on baseline code: {e}"
                );
                None
            }
        }
    }

    /// Collects the compile cache (see [`crate::cache`]): with `present` (the sha256 of every
    /// plugin version the registry holds), artifacts of other versions and engines and
    /// superseded baseline code go; then least recently used artifacts past
    /// [`RuntimeConfig::cache_max_bytes`]. Artifacts of loaded plugins are never removed.
    pub fn collect_cache(&self, present: Option<&HashSet<String>>) -> CacheStats {
        let config = &self.inner.config;
        let mut keys = vec![(Tier::Optimized, self.inner.optimized.key.as_str())];
        if let Some(b) = &self.inner.baseline {
            keys.push((Tier::Baseline, b.key.as_str()));
        }
        self.inner.leases.collect(&crate::cache::Collect {
            dir: &config.cache_dir,
            max_bytes: config.cache_max_bytes,
            keys: &keys,
            present,
            scratch_age: config.compile_timeout * 4 + Duration::from_secs(60),
        })
    }

    /// Compiles a component into an optimized artifact for this engine (what the cache holds).
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        self.inner
            .optimized
            .engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    /// `{pid}-{n}`: distinct for every compile of this process.
    fn scratch_suffix(&self) -> String {
        let n = self.inner.scratch_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", std::process::id())
    }

    /// Runs the configured compiler process; its artifact lands at `path`. The child is killed
    /// after [`RuntimeConfig::compile_timeout`] (a small component can take minutes to compile;
    /// twice that for a `background` compile, which runs at lower priority on half the cores).
    fn compile_in_child(
        &self,
        exe: &Path,
        bytes: &[u8],
        path: &Path,
        tier: Tier,
        background: bool,
    ) -> Result<(), LoadError> {
        let suffix = self.scratch_suffix();
        let input = path.with_extension(format!("in{suffix}.wasm"));
        let output = path.with_extension(format!("out{suffix}"));
        let errors = path.with_extension(format!("err{suffix}"));
        let io = |e: std::io::Error| LoadError::Compile(format!("compiler process: {e}"));
        std::fs::write(&input, bytes).map_err(io)?;
        let config = &self.inner.config;
        let timeout = if background {
            config.compile_timeout * 2
        } else {
            config.compile_timeout
        };
        let outcome = std::fs::File::create(&errors).and_then(|stderr| {
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["plugin", "compile"])
                .arg(&input)
                .arg(&output)
                .args(["--memory-mib", &config.max_memory_mib.to_string()])
                .args(["--max-calls", &config.max_concurrent_calls.to_string()])
                .args(["--tier", tier.as_str()])
                // Its stderr's last line becomes the error: no backtrace after the message
                // (with RUST_BACKTRACE=1 inherited, that line was `NN: _start`).
                .env("RUST_BACKTRACE", "0")
                .env("RUST_LIB_BACKTRACE", "0")
                // Fewer malloc arenas: less data memory mapped for the same work (counts
                // against the data limit below).
                .env("MALLOC_ARENA_MAX", "2")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(stderr);
            if background {
                // wasmtime compiles functions in parallel on rayon's pool: half the cores.
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                cmd.env("RAYON_NUM_THREADS", (cores / 2).max(1).to_string());
            }
            let data_limit = u64::from(config.compile_memory_mib) << 20;
            use std::os::unix::process::CommandExt as _;
            // SAFETY: setpriority and setrlimit are plain system calls (async-signal-safe), as
            // the pre_exec closure requires; the closure only reads two copied integers.
            unsafe {
                cmd.pre_exec(move || {
                    if background {
                        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                    }
                    // The kernel's out-of-memory killer takes the compiler first, never the
                    // service beside it (raising one's own score needs no privilege; without
                    // /proc the default scoring stays).
                    let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
                    if fd >= 0 {
                        libc::write(fd, b"1000".as_ptr().cast(), 4);
                        libc::close(fd);
                    }
                    if data_limit > 0 {
                        let limit = libc::rlimit {
                            rlim_cur: data_limit as libc::rlim_t,
                            rlim_max: data_limit as libc::rlim_t,
                        };
                        if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn()?;
            wait_or_kill(&mut child, timeout)
        });
        let why = std::fs::read_to_string(&errors).unwrap_or_default();
        let _ = std::fs::remove_file(&input);
        let _ = std::fs::remove_file(&errors);
        let status = outcome.map_err(io)?;
        let Some(status) = status else {
            let _ = std::fs::remove_file(&output);
            return Err(LoadError::Compile(format!(
                "{tier} compile took longer than {timeout:?}; the plugin is refused"
            )));
        };
        if !status.success() {
            let _ = std::fs::remove_file(&output);
            let all = why.as_str();
            let why = why
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let why = why.strip_prefix("Error: ").unwrap_or(why);
            if killed_from_outside(&status) {
                return Err(LoadError::Interrupted(format!(
                    "the {tier} compiler process was killed ({status}), most likely by the kernel's out-of-memory killer: the container was short of memory while it compiled"
                )));
            }
            if config.compile_memory_mib > 0 && out_of_memory(&status, all) {
                return Err(LoadError::Compile(format!(
                    "compiler process ({tier}, {status}): the compile needed more than {} MiB of memory (SLUICE_COMPILE_MEMORY_MIB); the plugin is refused",
                    config.compile_memory_mib
                )));
            }
            return Err(LoadError::Compile(format!(
                "compiler process ({tier}, {status}): {why}"
            )));
        }
        std::fs::rename(&output, path).map_err(io)
    }

    fn import_names(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .imports(component.engine())
            .map(|(n, _)| n.to_string())
            .collect()
    }

    async fn read_manifest(&self, code: &Code) -> Result<Manifest, LoadError> {
        // A throwaway manifest so the call has a context; it reaches nothing and has no secrets.
        let placeholder = Arc::new(Manifest {
            id: "loading".into(),
            name: "loading".into(),
            version: "0.0.0".into(),
            description: String::new(),
            config_schema: Value::Null,
            secrets: vec![],
            hosts: vec![],
            streams: vec![],
            memory_mib: None,
        });
        let opts = CallOptions {
            deadline: Duration::from_secs(5),
            ..CallOptions::default()
        };
        let state = self.call_state(
            placeholder,
            Destinations::none(),
            opts,
            None,
            Default::default(),
        );
        let raw = self
            .call(
                code,
                state,
                self.inner.config.default_memory_mib,
                "manifest",
                |p, s| Box::pin(async move { p.call_manifest(s).await }),
            )
            .await
            .map_err(|e| LoadError::Manifest(format!("manifest call failed: {e}")))?;
        Manifest::from_wit(raw).map_err(|e| LoadError::Manifest(e.to_string()))
    }

    fn call_state(
        &self,
        manifest: Arc<Manifest>,
        destinations: Destinations,
        opts: CallOptions,
        sink: Option<Box<dyn RecordSink>>,
        streams: std::collections::HashSet<String>,
    ) -> CallState {
        CallState {
            manifest,
            destinations,
            outbound: self.inner.outbound.clone(),
            secrets: opts.secrets,
            sink,
            streams,
            cancel: opts.cancel,
            deadline: Instant::now() + opts.deadline,
            labels: opts.labels,
            log: crate::host::LogLimits {
                run: opts.log_budget,
                ..self.inner.config.log.clone()
            },
            last_http_failure: Default::default(),
            deadline_setting: opts.deadline_setting,
            in_flight: Default::default(),
        }
    }

    /// Runs one export call (`export` names it in the call-duration metric) in a fresh store
    /// with the call's limits, mapping traps to errors.
    async fn call<R, F>(
        &self,
        code: &Code,
        state: CallState,
        memory_mib: u32,
        export: &'static str,
        f: F,
    ) -> Result<R, CallError>
    where
        F: for<'a> FnOnce(
            &'a Connector,
            &'a mut Store<HostState>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
        R: Send,
    {
        use tracing::Instrument;
        let plugin = state.manifest.id.clone();
        let span = tracing::info_span!(
            target: "sluice_trace",
            "plugin_call",
            plugin = %plugin,
            export,
            run_id = state.labels.run_id.as_deref(),
            connection_id = state.labels.connection_id.as_deref(),
            error.type = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .call_unmeasured(code, state, memory_mib, f)
            .instrument(span.clone())
            .await;
        sluice_telemetry::metrics().plugin_call(&plugin, export, started.elapsed());
        if let Err(e) = &result {
            span.record("error.type", e.code());
        }
        result
    }

    async fn call_unmeasured<R, F>(
        &self,
        code: &Code,
        state: CallState,
        memory_mib: u32,
        f: F,
    ) -> Result<R, CallError>
    where
        F: for<'a> FnOnce(
            &'a Connector,
            &'a mut Store<HostState>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
        R: Send,
    {
        let memory_mib = memory_mib
            .min(self.inner.config.max_memory_mib)
            .min(self.inner.config.memory_budget_mib)
            .max(1);
        let deadline = state.deadline;
        let budget = deadline.saturating_duration_since(Instant::now());
        let cancel = state.cancel.clone();
        let (setting, in_flight) = (state.deadline_setting, state.in_flight.clone());
        let late = move || {
            CallError::Deadline(crate::DeadlineExceeded {
                budget,
                setting,
                waiting_for: in_flight.lock().ok().and_then(|r| r.clone()),
            })
        };
        // A pooled slot first, then the global memory budget, both shared fairly between
        // plugins (`crate::fair`: a plugin whose calls hang cannot take the last quarter of
        // either). The budget is taken as the store's memories and tables grow (the async
        // limiter, `crate::budget`) and given back when the store is dropped: a call holds what
        // it uses, not its limit. The pages its component starts with are reserved in one step
        // once the call has its slot, holding no memory while it waits (so two instantiations
        // never each hold a memory the other waits for, and a call waiting for a slot holds
        // nothing). Both waits count against the call's deadline and end with its cancel.
        let plugin: crate::fair::Key = Arc::from(state.manifest.id.as_str());
        let _slot = tokio::select! {
            permit = self.inner.call_slots.acquire(&plugin, 1) => permit.ok_or_else(|| {
                CallError::Host("no call slot can ever be granted".into())
            })?,
            _ = tokio::time::sleep_until(deadline.into()) => return Err(late()),
            _ = cancel.cancelled() => return Err(CallError::Cancelled),
        };
        let mut share = self.inner.memory_budget.share(plugin, deadline);
        let initial = code
            .initial_bytes
            .load(Ordering::Relaxed)
            .min((memory_mib as usize) << 20);
        tokio::select! {
            r = share.cover(initial) => r.map_err(|e| CallError::MemoryBudget(e.to_string()))?,
            _ = tokio::time::sleep_until(deadline.into()) => return Err(late()),
            _ = cancel.cancelled() => return Err(CallError::Cancelled),
        };
        let mut store = Store::new(
            &code.engine,
            HostState::new(state, (memory_mib as usize) << 20, Some(share)),
        );
        store.limiter_async(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let call = &ctx.data().call;
            if call.cancel.is_cancelled() {
                return Err(wasmtime::Error::new(Stop::Cancelled));
            }
            if Instant::now() >= call.deadline {
                return Err(wasmtime::Error::new(Stop::Deadline));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let run = async {
            let plugin = code.pre.instantiate_async(&mut store).await?;
            code.initial_bytes
                .fetch_max(store.data().limits.used(), Ordering::Relaxed);
            f(&plugin, &mut store).await
        };
        // The epoch callback stops a busy guest; this also bounds time spent in host calls.
        let outcome = tokio::select! {
            r = run => Some(r),
            _ = tokio::time::sleep_until(deadline.into()) => None,
            _ = cancel.cancelled() => return Err(CallError::Cancelled),
        };
        store.data_mut().finish_logs();
        tracing::debug!(
            plugin = %store.data().call.manifest.id,
            memory_peak_kib = store.data().limits.peak >> 10,
            memory_limit_mib = memory_mib,
            "plugin call ended"
        );
        let Some(result) = outcome else {
            return Err(late());
        };
        let secrets = &store.data().call.secrets;
        result.map_err(|e| {
            match e.downcast_ref::<Stop>() {
                Some(Stop::Deadline) => return late(),
                Some(Stop::Cancelled) => return CallError::Cancelled,
                Some(Stop::MemoryLimit) => {
                    tracing::warn!(plugin = %store.data().call.manifest.id, limit_mib = memory_mib, "plugin hit its memory limit");
                    return CallError::MemoryLimit(memory_mib as u64);
                }
                Some(Stop::MemoryBudget(m)) => {
                    tracing::warn!(plugin = %store.data().call.manifest.id, "plugin memory growth refused: {m}");
                    return CallError::MemoryBudget(m.clone());
                }
                Some(Stop::Contract(m)) => return CallError::Contract(secrets.redact(m)),
                Some(Stop::Host(m)) => return CallError::Host(secrets.redact(m)),
                None => {}
            }
            let msg = match e.downcast_ref::<wasmtime::Trap>() {
                Some(trap) => trap.to_string(),
                None => format!("{e:#}"),
            };
            tracing::warn!(plugin = %store.data().call.manifest.id, "plugin trapped: {msg}");
            CallError::Trap(secrets.redact(&msg))
        })
    }
}

/// Whether a failed compile child ran out of its data limit: Rust's allocation failure aborts
/// (`memory allocation of N bytes failed`, SIGABRT); a failed mmap comes back as ENOMEM.
fn out_of_memory(status: &std::process::ExitStatus, stderr: &str) -> bool {
    use std::os::unix::process::ExitStatusExt as _;
    stderr.contains("memory allocation of")
        || stderr.contains("Cannot allocate memory")
        || stderr.contains("out of memory")
        || status.signal() == Some(libc::SIGABRT)
}

/// Most optimizing compiles of one plugin version that [`Runtime::optimize_later`] starts when
/// they keep being interrupted.
pub(crate) const OPTIMIZE_ATTEMPTS: u32 = 3;

/// How long to wait before trying an interrupted compile again, after `attempt` tries: 15 s,
/// doubling, at most 5 minutes (the container's memory is short; give it time to recover).
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    let secs = 15u64.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    Duration::from_secs(secs.min(300))
}

/// Whether a compile child died of SIGKILL, which the host sends only past the timeout (and
/// that case never gets here): the kernel's out-of-memory killer, or an operator.
fn killed_from_outside(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt as _;
    status.signal() == Some(libc::SIGKILL)
}

/// Waits for `child` up to `timeout`; kills it past that (`Ok(None)`).
fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The call slots of `max_concurrent_calls` pooled instances: a quarter (rounded down) kept
/// from plugins whose calls hold more than a quarter of that quarter (at least one slot), so
/// that one plugin's hanging calls leave room for the calls of four others ([`crate::fair`]).
fn call_slots(max_concurrent_calls: u32) -> Arc<crate::fair::FairPool> {
    crate::fair::FairPool::quarter_reserve(u64::from(max_concurrent_calls.max(1)), |reserve| {
        (reserve / 4).max(1)
    })
}

/// The pooling allocator: instance, memory and stack slots made once and reused, so that a call
/// costs no mmap/munmap of its own (the main cost of instantiation otherwise). Memory slots are
/// virtual reservations; their pages are given back when a call ends.
fn pooling(config: &RuntimeConfig) -> PoolingAllocationConfig {
    let calls = config.max_concurrent_calls.max(1);
    let mut p = PoolingAllocationConfig::new();
    // Per-component caps make a component that could take more than its share refused when it
    // loads; the totals then fit `calls` components at their caps, so no call can starve another.
    p.total_component_instances(calls)
        .max_core_instances_per_component(MAX_CORE_INSTANCES as u32)
        .max_memories_per_component(MAX_MEMORIES as u32)
        .max_tables_per_component(MAX_TABLES as u32)
        .total_core_instances(calls * MAX_CORE_INSTANCES as u32)
        .total_memories(calls * MAX_MEMORIES as u32)
        .total_tables(calls * MAX_TABLES as u32)
        .total_stacks(calls)
        .max_memory_size((config.max_memory_mib as usize) << 20);
    p
}

fn check_component_header(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => Err(LoadError::NotComponent(
            "a core wasm module; build it as a component (wasm-component-ld or `wasm-tools component new`)".into(),
        )),
        _ => Err(LoadError::NotComponent("missing the \\0asm component header".into())),
    }
}

/// Ticks the engines' epochs until they are dropped.
fn spawn_epoch_ticker(engines: Vec<wasmtime::EngineWeak>) {
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for weak in &engines {
                    if let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        alive = true;
                    }
                }
                if !alive {
                    return;
                }
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch thread");
}

/// Per-call options chosen by the caller.
#[derive(Clone)]
pub struct CallOptions {
    pub secrets: Secrets,
    /// Wall-clock budget of the call, host calls included.
    pub deadline: Duration,
    pub cancel: CancellationToken,
    pub labels: CallLabels,
    /// The log budget of the run this call belongs to (shared by its calls), if any.
    pub log_budget: Option<Arc<crate::host::LogBudget>>,
    /// The operator setting `deadline` comes from (`SLUICE_CALL_TIMEOUT_SECS`), named when the
    /// call runs past it.
    pub deadline_setting: Option<&'static str>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            secrets: Secrets::default(),
            deadline: Duration::from_secs(30),
            cancel: CancellationToken::new(),
            labels: CallLabels::default(),
            log_budget: None,
            deadline_setting: None,
        }
    }
}

/// Facts about a loaded plugin file.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub id: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub path: Option<PathBuf>,
    pub wit_version: String,
    pub imports: Vec<String>,
    pub compiled_from_cache: bool,
    pub load_ms: f64,
    #[serde(with = "system_time_secs")]
    pub loaded_at: SystemTime,
}

mod system_time_secs {
    use serde::Serializer;
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }
}

/// What a sync asks of a connector.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub config: Value,
    pub streams: Vec<String>,
    pub state: Vec<(String, Value)>,
    /// When the run (this attempt) started, RFC 3339 UTC: the window's upper bound
    /// (`sync-request.started-at`; components built against 0.1.0 do not get it).
    pub started_at: String,
    /// The run's id (`sync-request.run-id`; not given to 0.1.0 components).
    pub run_id: String,
}

/// A loaded, linked plugin version. Cheap to clone; calls on it are independent.
#[derive(Clone)]
pub struct Plugin {
    runtime: Runtime,
    info: Arc<PluginInfo>,
    manifest: Arc<Manifest>,
    /// Its current code: baseline until the optimized code is swapped in.
    code: Arc<ArcSwap<Code>>,
}

impl Plugin {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The compiler tier of the code new calls run: [`Tier::Baseline`] from a first load
    /// until the optimized code is swapped in, then [`Tier::Optimized`].
    pub fn tier(&self) -> Tier {
        self.code.load().tier
    }

    fn memory_mib(&self) -> u32 {
        self.manifest
            .memory_mib
            .unwrap_or(self.runtime.inner.config.default_memory_mib)
    }

    fn state(
        &self,
        config: &Value,
        opts: CallOptions,
        sink: Option<Box<dyn RecordSink>>,
        streams: std::collections::HashSet<String>,
    ) -> CallState {
        let dest = self
            .runtime
            .inner
            .outbound
            .destinations(&self.manifest.hosts, config)
            .labelled(&self.manifest.id);
        self.runtime
            .call_state(self.manifest.clone(), dest, opts, sink, streams)
    }

    /// Checks config and credentials against the upstream; returns the account summary.
    pub async fn validate(&self, config: &Value, opts: CallOptions) -> Result<Value, CallError> {
        let secrets = opts.secrets.clone();
        let state = self.state(config, opts, None, Default::default());
        let failure = state.last_http_failure.clone();
        let text = config.to_string();
        let code = self.code.load_full();
        let out = self
            .runtime
            .call(&code, state, self.memory_mib(), "validate", |p, s| {
                Box::pin(async move { p.call_validate(s, &text).await })
            })
            .await?;
        let account = out.map_err(|e| connector_error(e, &secrets, &failure))?;
        let account: Value = serde_json::from_str(&account)
            .map_err(|e| CallError::Contract(format!("validate returned invalid JSON: {e}")))?;
        // The account goes into API answers: no secret may ride along.
        Ok(secrets.redactor().redact_json(account))
    }

    /// The streams this config produces.
    pub async fn discover(
        &self,
        config: &Value,
        opts: CallOptions,
    ) -> Result<Vec<StreamSpec>, CallError> {
        let secrets = opts.secrets.clone();
        let state = self.state(config, opts, None, Default::default());
        let failure = state.last_http_failure.clone();
        let text = config.to_string();
        let code = self.code.load_full();
        let out = self
            .runtime
            .call(&code, state, self.memory_mib(), "discover", |p, s| {
                Box::pin(async move { p.call_discover(s, &text).await })
            })
            .await?;
        let streams = out.map_err(|e| connector_error(e, &secrets, &failure))?;
        crate::manifest::check_discovered(&streams)
            .map_err(|e| CallError::Contract(secrets.redact(&e.to_string())))?;
        // Stream names and schemas reach run records, storage and logs: redacted first, then
        // checked (a redacted name is no valid stream name).
        streams
            .into_iter()
            .map(|s| {
                let s = redact_stream(s, secrets.redactor());
                StreamSpec::from_wit(s)
                    .map_err(|e| CallError::Contract(secrets.redact(&e.to_string())))
            })
            .collect()
    }

    /// Reads the selected streams into `sink`.
    pub async fn sync(
        &self,
        req: SyncRequest,
        sink: Box<dyn RecordSink>,
        opts: CallOptions,
    ) -> Result<(), CallError> {
        let secrets = opts.secrets.clone();
        let streams = req.streams.iter().cloned().collect();
        let state = self.state(&req.config, opts, Some(sink), streams);
        let failure = state.last_http_failure.clone();
        let wreq = wit::SyncRequest {
            config: req.config.to_string(),
            streams: req.streams,
            state: req
                .state
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            started_at: req.started_at,
            run_id: req.run_id,
        };
        let code = self.code.load_full();
        let out = self
            .runtime
            .call(&code, state, self.memory_mib(), "sync", |p, s| {
                Box::pin(async move { p.call_sync(s, &wreq).await })
            })
            .await?;
        out.map_err(|e| connector_error(e, &secrets, &failure))
    }

    /// Instantiates and calls `manifest` (the cheapest full call; used by benchmarks).
    pub async fn call_manifest(&self) -> Result<(), CallError> {
        let state = self.runtime.call_state(
            self.manifest.clone(),
            Destinations::none(),
            CallOptions::default(),
            None,
            Default::default(),
        );
        let code = self.code.load_full();
        self.runtime
            .call(&code, state, self.memory_mib(), "manifest", |p, s| {
                Box::pin(async move { p.call_manifest(s).await })
            })
            .await
            .map(|_| ())
    }
}

/// A discovered stream with every plugin-written string redacted.
fn redact_stream(
    mut s: crate::bindings::sluice::connector::types::StreamSpec,
    r: &crate::redact::Redactor,
) -> crate::bindings::sluice::connector::types::StreamSpec {
    if r.is_empty() {
        return s;
    }
    s.name = r.redact_string(s.name);
    s.description = r.redact_string(s.description);
    s.json_schema = r.redact_string(s.json_schema);
    s.primary_key = s
        .primary_key
        .into_iter()
        .map(|k| r.redact_string(k))
        .collect();
    s.cursor_field = s.cursor_field.map(|c| r.redact_string(c));
    s
}

/// The plugin's error as the host keeps it: code mapped, message cut and redacted; when the
/// message speaks of the call's last failed `http.fetch` (`timeout`, `too-large`), the host adds
/// which request and which limit (see [`crate::host::HttpFailure`]).
fn connector_error(
    mut e: crate::bindings::sluice::connector::types::ConnectorError,
    secrets: &Secrets,
    failure: &std::sync::Mutex<Option<crate::host::HttpFailure>>,
) -> CallError {
    if let Ok(last) = failure.lock()
        && let Some(explained) = last.as_ref().and_then(|f| f.explain(&e.message))
    {
        e.message = explained;
    }
    use crate::bindings::sluice::connector::types::ErrorCode as W;
    let code = match e.code {
        W::InvalidCredentials => ErrorCode::InvalidCredentials,
        W::InsufficientScope => ErrorCode::InsufficientScope,
        W::InvalidConfig => ErrorCode::InvalidConfig,
        W::Unreachable => ErrorCode::Unreachable,
        W::RateLimited => ErrorCode::RateLimited,
        W::Internal => ErrorCode::Internal,
    };
    // Cut (to the limit plus the longest secret form), redacted, then cut to the limit: the
    // message becomes the run's error and a log line, so a plugin cannot make either huge.
    let margin = secrets.redactor().longest_form();
    let redacted = secrets.redact(&crate::host::truncate(
        &e.message,
        MAX_ERROR_MESSAGE_BYTES.saturating_add(margin),
    ));
    CallError::Connector {
        code,
        message: crate::host::truncate(&redacted, MAX_ERROR_MESSAGE_BYTES).into_owned(),
    }
}

/// The longest error message of a plugin's own that is kept (bytes; longer ones are cut and
/// marked with how much was cut).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// The compile cache under `dir`: `dir` itself when this user owns it (made mode 0700), else
/// this user's own subdirectory `uid-{euid}` in it (a volume mounted there belongs to root,
/// as a Kubernetes `emptyDir` does). Its artifacts are native code, deserialized without
/// further checks (a planted one would bypass `SLUICE_TRUSTED_KEYS`), so a directory that
/// another user owns is refused.
fn private_cache_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    std::fs::create_dir_all(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let own = |d: &Path| -> anyhow::Result<PathBuf> {
        let meta = std::fs::metadata(d)?;
        anyhow::ensure!(
            meta.uid() == me,
            "compile cache {} belongs to uid {}, not to this user ({me}): its artifacts run as native code",
            d.display(),
            meta.uid()
        );
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(d.to_path_buf())
    };
    if std::fs::metadata(dir)?.uid() == me {
        return own(dir);
    }
    let sub = dir.join(format!("uid-{me}"));
    match std::fs::create_dir(&sub) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    own(&sub)
}

/// The text of a signature file, `None` when there is none; at most
/// [`crate::signing::MAX_SIGNATURE_BYTES`] are read.
async fn read_signature(path: &Path) -> std::io::Result<Option<String>> {
    use tokio::io::AsyncReadExt;
    // Only a regular file is opened: a FIFO would block the reload (and shutdown) for good.
    match tokio::fs::metadata(path).await {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(crate::signing::MAX_SIGNATURE_BYTES)
        .read_to_end(&mut bytes)
        .await?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_compile_cache_is_this_users_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        assert_eq!(super::private_cache_dir(&dir).unwrap(), dir);
        let mode = |d: &std::path::Path| std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        // Opened up by someone: closed again.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        super::private_cache_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_plugins_error_message_is_cut_and_redacted_even_where_the_cut_falls_in_a_secret() {
        use crate::bindings::sluice::connector::types::{ConnectorError, ErrorCode};
        let secret = "s3cr3t-value-0123456789";
        let secrets = crate::host::Secrets::new([("token".to_string(), secret.to_string())]);
        let limit = super::MAX_ERROR_MESSAGE_BYTES;
        for pad in [0, limit - 10, limit - 3] {
            let message = format!("{}{secret}{}", "a".repeat(pad), "b".repeat(1 << 20));
            let e = ConnectorError {
                code: ErrorCode::Internal,
                message,
            };
            match super::connector_error(e, &secrets, &Default::default()) {
                crate::CallError::Connector { message, .. } => {
                    assert!(message.len() < limit + 64, "{} bytes", message.len());
                    assert!(message.contains("bytes cut]"), "marked as cut");
                    assert!(!message.contains(&secret[..10]), "no part of the secret");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// A stand-in compiler: records whether another compile child was running when it started
    /// (`overlap`), how many ran (`runs`) and its limits (`limits`), then fails as `fail` says.
    fn fake_compiler(dir: &std::path::Path, fail: &str) -> std::path::PathBuf {
        let exe = dir.join("fake-compiler");
        let d = dir.display();
        std::fs::write(
            &exe,
            format!(
                "#!/bin/sh\n\
                 mkdir '{d}/running' 2>/dev/null || touch '{d}/overlap'\n\
                 echo run >> '{d}/runs'\n\
                 cat /proc/self/limits > '{d}/limits'\n\
                 sleep 0.4\n\
                 rmdir '{d}/running' 2>/dev/null\n\
                 {fail}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// Bytes that pass the component header check, distinct per `n` (distinct sha256).
    fn component_bytes(n: u8) -> Vec<u8> {
        let mut b = vec![0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00];
        b.extend(std::iter::repeat_n(n, 1 << 20));
        b
    }

    fn runtime_with(compiler: std::path::PathBuf, dir: &std::path::Path) -> super::Runtime {
        let mut rc = super::RuntimeConfig::new(dir.join("cache"));
        rc.compiler = Some(compiler);
        rc.tiered = true;
        rc.max_concurrent_calls = 2;
        rc.compile_memory_mib = 100;
        super::Runtime::new(rc).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_loads_never_run_two_compile_children_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let exe = fake_compiler(dir.path(), "echo 'Error: no artifact' >&2; exit 1");
        let rt = runtime_with(exe, dir.path());
        let (a, b) = tokio::join!(
            rt.load_bytes(component_bytes(1), None),
            rt.load_bytes(component_bytes(2), None)
        );
        for r in [a, b] {
            let e = r
                .err()
                .expect("the stand-in compiler makes no artifact")
                .to_string();
            assert!(e.contains("no artifact"), "{e}");
        }
        let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
        // Each load: baseline, then optimized after the baseline failure.
        assert_eq!(runs.lines().count(), 4, "{runs}");
        assert!(
            !dir.path().join("overlap").exists(),
            "two compile children ran at once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compile_child_has_a_data_limit_and_its_oom_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let exe = fake_compiler(
            dir.path(),
            "echo 'memory allocation of 2097152 bytes failed' >&2; kill -ABRT $$",
        );
        let rt = runtime_with(exe, dir.path());
        let e = rt
            .load_bytes(component_bytes(3), None)
            .await
            .err()
            .expect("the stand-in compiler aborts")
            .to_string();
        assert!(
            e.contains("needed more than 100 MiB") && e.contains("SLUICE_COMPILE_MEMORY_MIB"),
            "{e}"
        );
        let limits = std::fs::read_to_string(dir.path().join("limits")).unwrap();
        let data = limits
            .lines()
            .find(|l| l.starts_with("Max data size"))
            .unwrap();
        let bytes = (100u64 << 20).to_string();
        assert_eq!(
            data.split_whitespace().filter(|w| *w == bytes).count(),
            2,
            "{data}"
        );
    }
}
