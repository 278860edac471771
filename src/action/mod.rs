//! Typed actions: the Rust side of every `namespace::name(..)` a runbook calls.
//!
//! An action declares its input and output as serde types (their JSON schemas document it),
//! its effect (read or write), whether running it twice equals running it once, how it reads
//! in one line, and what it would return in a dry-run. The engine (runner) does the rest:
//! journaling, replay, timeouts, retries and the plan.

/// Declares an action's input with the fields that reach its target declared once for every
/// action of a backend: `url` and `name` first for PostgreSQL and Redis, `context` and
/// `kubeconfig` first for Kubernetes (then `namespace` and `deployment` for a deployment's
/// actions), `endpoint_url` and `region` last for Route53 — the order
/// the journal has always had, so a call's identity does not change. Unknown fields are
/// refused, naming the field.
macro_rules! input {
    (pg: $($decl:tt)*) => {
        input!(@with {
            /// The server's connection string or URL, e.g. postgres://user@host:5432/db (usually a secret).
            pub url: $crate::secret::SecretString,
            /// A label for messages, such as the region.
            pub name: Option<String>,
        } {} $($decl)*);
    };
    (redis: $($decl:tt)*) => {
        input!(@with {
            /// redis://[:password@]host:port (usually a secret).
            pub url: $crate::secret::SecretString,
            /// A label for messages, such as the region.
            pub name: Option<String>,
        } {} $($decl)*);
    };
    (k8s: $(#[$meta:meta])* pub struct $name:ident { $($field:tt)* }) => {
        input!(@with {
            /// The kubeconfig context, e.g. "us-east-1".
            pub context: String,
            /// The kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
            pub kubeconfig: Option<String>,
        } {} $(#[$meta])* pub struct $name { $($field)* });

        impl $name {
            /// The cluster the call reaches.
            pub fn cluster(&self) -> $crate::action::k8s::Cluster {
                $crate::action::k8s::Cluster {
                    context: self.context.clone(),
                    kubeconfig: self.kubeconfig.clone(),
                }
            }
        }
    };
    (k8s_deployment: $(#[$meta:meta])* pub struct $name:ident { $($field:tt)* }) => {
        input!(k8s: $(#[$meta])* pub struct $name {
            /// The namespace (default: the context's).
            pub namespace: Option<String>,
            /// The deployment.
            pub deployment: String,
            $($field)*
        });

        impl $name {
            /// "deployment app in us-east-1", for messages.
            pub fn what(&self) -> String {
                format!("deployment {} in {}", self.deployment, self.context)
            }

            /// The deployment the call names, and where.
            pub fn target(&self) -> $crate::action::k8s::DeploymentRef<'_> {
                $crate::action::k8s::DeploymentRef {
                    cluster: self.cluster(),
                    namespace: &self.namespace,
                    name: &self.deployment,
                }
            }
        }
    };
    (http: $($decl:tt)*) => {
        input!(@with {
            /// The URL to call; may be a secret (shown as `<secret NAME>`).
            pub url: $crate::secret::SecretString,
            /// Request headers; values may be secrets.
            #[serde(default, skip_serializing_if = "::std::collections::BTreeMap::is_empty")]
            pub headers: ::std::collections::BTreeMap<String, $crate::secret::SecretString>,
        } {} $($decl)*);
    };
    (route53: $($decl:tt)*) => {
        input!(@with {} {
            /// Another endpoint for the Route53 API (moto, LocalStack); default: AWS.
            pub endpoint_url: Option<String>,
            /// The AWS region for signing (default us-east-1; Route53 is global).
            pub region: Option<String>,
        } $($decl)*);
    };
    (@with { $($first:tt)* } { $($last:tt)* }
        $(#[$meta:meta])* pub struct $name:ident { $($field:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, ::serde::Serialize, ::serde::Deserialize, ::schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($first)*
            $($field)*
            $($last)*
        }
    };
}

/// Declares an action: its documentation (the text `runbook actions` and editors show), the
/// type a runbook calls, its input and output, and its class with the engine's defaults. What
/// it does follows in an `impl Action for` block.
///
/// ```ignore
/// action! {
///     /// Promote a standby to primary and wait until it accepts writes.
///     Promote(PromoteInput) -> Promoted = Spec::converge("pg", "promote").primary("url")
/// }
/// ```
macro_rules! action {
    ($(#[doc = $doc:literal])+ $name:ident($input:ty) -> $output:ty = $spec:expr) => {
        $(#[doc = $doc])+
        pub struct $name;

        impl $crate::action::Signature for $name {
            type Input = $input;
            type Output = $output;

            fn spec() -> $crate::action::Spec {
                $spec.described(concat!($($doc),+))
            }
        }
    };
    ($name:ident $($rest:tt)*) => {
        compile_error!(concat!(
            "action ",
            stringify!($name),
            ": say what it does in a /// comment first (the text `runbook actions` and editors show)"
        ));
    };
}

mod aws;
pub mod child;
mod clients;
pub mod cloudfront;
pub mod dns;
pub mod http;
pub mod k8s;
pub mod notify;
pub mod pg;
mod poll;
pub mod prom;
pub mod redis;
pub(crate) mod secret_text;
pub mod shell;
pub mod time;
pub mod topology;
pub mod types;
pub mod world;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::secret::Redactor;
pub(crate) use clients::Clients;
pub use poll::Poll;
pub use types::{Dur, StatusSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Observes the world; runs for real in a dry-run.
    Read,
    /// Changes the world; predicted in a dry-run.
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Idempotency {
    /// Running it twice equals running it once: safe to re-run when a crash left it in flight.
    Idempotent,
    /// A second run repeats the change: the operator decides after a crash.
    NotIdempotent,
}

/// Fields every action call takes besides its own: (name, type, documentation).
pub const COMMON_FIELDS: [(&str, &str, &str); 3] = [
    ("timeout", "duration", "time limit of one attempt (default: the action's own)"),
    ("retries", "integer", "retries on transient errors (reads and idempotent writes only, unless the request was never sent)"),
    ("backoff", "duration", "wait before the first retry, doubled each time (default \"500ms\")"),
];

/// The fields every action takes, as a call gave them (each `None` when not given).
#[derive(Debug, Default)]
pub struct Common {
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub backoff: Option<Duration>,
}

/// Takes the fields every action takes ([`COMMON_FIELDS`]) out of a call's map; a value that
/// is not one names its field.
pub fn take_common(map: &mut serde_json::Map<String, Value>) -> Result<Common, FieldError> {
    let bad = |field: &str, message: String| FieldError {
        field: field.into(),
        message,
    };
    let duration = |v: Value, field: &str| {
        serde_json::from_value::<Dur>(v)
            .map(|d| d.0)
            .map_err(|e| bad(field, e.to_string()))
    };
    let mut common = Common::default();
    if let Some(v) = map.remove("timeout") {
        common.timeout = Some(duration(v, "timeout")?);
    }
    if let Some(v) = map.remove("backoff") {
        common.backoff = Some(duration(v, "backoff")?);
    }
    if let Some(v) = map.remove("retries") {
        let n = v.as_u64().filter(|n| *n <= 100).ok_or_else(|| {
            bad(
                "retries",
                format!("expected a number from 0 to 100, got {v}"),
            )
        })?;
        common.retries = Some(n as u32);
    }
    Ok(common)
}

/// What the engine needs to know of an action besides its types.
#[derive(Debug, Clone)]
pub struct Spec {
    pub namespace: &'static str,
    pub name: &'static str,
    pub doc: &'static str,
    pub effect: Effect,
    pub idempotency: Idempotency,
    /// The field a single non-map argument fills: `http::get("https://..")`.
    pub primary: Option<&'static str>,
    pub default_timeout: Duration,
    /// Retries on transient errors when the call does not say.
    pub default_retries: u32,
    /// Whether the action ends itself at its time limit, with a message that says what did not
    /// answer (the engine then gives it a grace second before it stops waiting). False: the
    /// engine ends the call at the limit itself.
    pub ends_at_limit: bool,
}

impl Spec {
    /// An action that observes: it runs for real in a dry-run and is safe to repeat (a 30 s
    /// time limit and 2 retries unless it says otherwise).
    pub const fn read(namespace: &'static str, name: &'static str) -> Spec {
        Spec {
            namespace,
            name,
            doc: "",
            effect: Effect::Read,
            idempotency: Idempotency::Idempotent,
            primary: None,
            default_timeout: Duration::from_secs(30),
            default_retries: 2,
            ends_at_limit: true,
        }
    }

    /// A change that converges: running it twice equals running it once (60 s, 1 retry).
    pub const fn converge(namespace: &'static str, name: &'static str) -> Spec {
        Spec {
            effect: Effect::Write,
            default_timeout: Duration::from_secs(60),
            default_retries: 1,
            ..Spec::read(namespace, name)
        }
    }

    /// A change that a second run repeats: after a crash the operator decides (60 s, no retry).
    pub const fn change(namespace: &'static str, name: &'static str) -> Spec {
        Spec {
            idempotency: Idempotency::NotIdempotent,
            default_retries: 0,
            ..Spec::converge(namespace, name)
        }
    }

    /// What the action does, for `runbook actions` and editors: the declaration's doc comment.
    pub const fn described(self, doc: &'static str) -> Spec {
        Spec {
            doc: doc.trim_ascii(),
            ..self
        }
    }

    /// The field a single non-map argument fills.
    pub const fn primary(self, field: &'static str) -> Spec {
        Spec {
            primary: Some(field),
            ..self
        }
    }

    /// The time limit of one attempt, in seconds.
    pub const fn timeout(self, secs: u64) -> Spec {
        Spec {
            default_timeout: Duration::from_secs(secs),
            ..self
        }
    }

    /// Retries on transient errors when the call does not say.
    pub const fn retries(self, n: u32) -> Spec {
        Spec {
            default_retries: n,
            ..self
        }
    }

    /// For an action whose client has no limit of its own per call (a request to an API that
    /// takes the connection and never answers waits on): the engine ends it at its time limit.
    pub const fn limit_kept_by_engine(self) -> Spec {
        Spec {
            ends_at_limit: false,
            ..self
        }
    }

    pub fn full_name(&self) -> String {
        format!("{}::{}", self.namespace, self.name)
    }

    /// A write that only tells people (notify::): it changes no system. A run that made only
    /// such writes has changed nothing, and holds no claim on its locks when it stops.
    pub fn is_notice(&self) -> bool {
        self.effect == Effect::Write && self.namespace == "notify"
    }
}

/// The context an action runs in.
#[derive(Clone)]
pub struct Cx {
    pub http: reqwest::Client,
    /// How the operator started the run, for the commands an action suggests.
    pub invocation: Arc<Invocation>,
    pub redactor: Redactor,
    /// The time limit of this attempt.
    pub timeout: Duration,
    /// Set on Ctrl-C; long waits inside an action check it.
    pub cancel: Arc<AtomicBool>,
    /// Progress of a long action (a countdown, a poll's last answer).
    pub progress: Arc<dyn Fn(String) + Send + Sync>,
}

/// How the operator started the run, as given, so that a command an action suggests (the
/// fix of an anomaly) can be pasted as it is: the folder of the running runbook (where its
/// sibling runbooks are), the inventory file, the store options; an offline dry-run's world
/// carries it too. Left empty (a test), commands read `runbook run runbooks/NAME.rhai -i
/// INVENTORY`. A run's journal keeps the one it was started with, so that the commands a
/// runbook spells (`runbook_command`) read the same in every session of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Invocation {
    /// The running runbook's folder ("" for the current one).
    pub runbooks: Option<String>,
    /// The runbooks in that folder (`rejoin.rhai`, ...), listed once when the run starts: the
    /// rules that name them run on every observation and read no files.
    pub siblings: std::collections::BTreeSet<String>,
    /// The inventory file.
    pub inventory: Option<String>,
    /// " --store ..." or " --state-dir ...", as the operator gave it; "" for the default.
    pub store_flag: String,
    /// The folder the run started in: a relative path among its --var values means a path
    /// there, so a resume runs there too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// This run, "ID of RUNBOOK", for what an action leaves on a server to say who changed it
    /// (a fence); None in a dry-run. Not kept in the journal: each session knows it.
    #[serde(skip)]
    pub run: Option<String>,
}

impl Invocation {
    pub fn new(runbook: &str, inventory: Option<&str>, store_flag: &str) -> Invocation {
        let dir = std::path::Path::new(runbook)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let listed = std::fs::read_dir(if dir.is_empty() { "." } else { &dir });
        let siblings = listed
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.ends_with(".rhai"))
            .collect();
        Invocation {
            runbooks: Some(dir),
            siblings,
            inventory: inventory.map(str::to_string),
            store_flag: store_flag.to_string(),
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string()),
            run: None,
        }
    }

    /// The same, naming the run `id` of `runbook`.
    pub fn of_run(mut self, id: Option<&str>, runbook: &str) -> Invocation {
        let name = std::path::Path::new(runbook)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| runbook.to_string());
        self.run = id.map(|id| format!("{id} of {name}"));
        self
    }

    /// `runbook run DIR/NAME.rhai -i INVENTORY REST`: the shipped runbook `name` beside the
    /// running one when it is there, else as `runbooks/NAME.rhai`.
    pub fn run(&self, name: &str, rest: &str) -> String {
        use crate::error::shell_word;
        let file = format!("{name}.rhai");
        let runbook = match &self.runbooks {
            Some(dir) if self.siblings.contains(&file) => {
                if dir.is_empty() {
                    file
                } else {
                    format!("{}/{file}", dir.trim_end_matches('/'))
                }
            }
            _ => format!("runbooks/{file}"),
        };
        let inventory = self
            .inventory
            .as_deref()
            .map_or("INVENTORY".to_string(), shell_word);
        format!(
            "runbook run {} -i {inventory}{rest}{}",
            shell_word(&runbook),
            self.store_flag
        )
    }
}

impl Cx {
    pub fn note(&self, message: impl Into<String>) {
        (self.progress)(message.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying cannot help (bad input, 4xx, a failed check).
    Permanent,
    /// The request never reached the target (connection refused): safe to retry any action.
    TransientNotSent,
    /// The request may have been applied (a timeout after sending): retry only idempotent ones.
    TransientMaybeApplied,
    /// Stopped by Ctrl-C before it finished: left in flight, for resume to decide.
    Interrupted,
}

#[derive(Debug, Clone)]
pub struct ActionError {
    pub message: String,
    pub kind: ErrorKind,
}

impl ActionError {
    pub fn permanent(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            kind: ErrorKind::Permanent,
        }
    }
    pub fn not_sent(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            kind: ErrorKind::TransientNotSent,
        }
    }
    pub fn maybe_applied(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            kind: ErrorKind::TransientMaybeApplied,
        }
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a runbook calls an action, what it takes and returns, and its class: what
/// [`action!`] declares.
pub trait Signature {
    type Input: DeserializeOwned + Serialize + JsonSchema + Clone + Send + Sync + 'static;
    type Output: Serialize + JsonSchema + Send + 'static;

    fn spec() -> Spec;
}

/// What an action does: how it reads, what a dry-run returns, and the call itself.
pub trait Action: Signature + Send + Sync + 'static {
    /// One line saying what the call does, in the operator's words (progress and plan).
    fn describe(input: &Self::Input) -> String;
    /// The output a dry-run returns in its place.
    fn predict(input: &Self::Input) -> Self::Output;
    /// Whether `predict_in` answers for a target the world says is down (a wait for it to
    /// fail; a rewind of a stopped server). Otherwise a call to a down part fails before
    /// `predict_in` is asked, as it would for real.
    const ANSWERS_FOR_DOWN: bool = false;
    /// An offline dry-run's answer from the world it assumes (`--assume`, else the
    /// inventory's): what the read would see there, or how the call would fail. None: the
    /// world changes nothing of `predict`.
    fn predict_in(
        _input: &Self::Input,
        _world: &world::World,
    ) -> Option<Result<Self::Output, ActionError>> {
        None
    }
    fn run(
        input: Self::Input,
        cx: Cx,
    ) -> impl Future<Output = Result<Self::Output, ActionError>> + Send;

    /// For a dry-run's plan: the target's current state, read (never changed) just before the
    /// change would happen ("now replica at 0/3000060, lag 0 B"). None when there is nothing to say.
    fn preview(_input: Self::Input, _cx: Cx) -> impl Future<Output = Option<String>> + Send {
        async { None }
    }

    /// Whether this call is idempotent, when the caller may say so (a shell command that
    /// converges); None: the action's own class.
    fn idempotent(_input: &Self::Input) -> Option<bool> {
        None
    }
}

/// A field that could not be decoded.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A decoded call, ready to run, predict or compare with the journal.
pub struct Prepared {
    /// The typed input as JSON, secrets as references: what the journal records.
    pub input: Value,
    /// Whether running this call twice equals running it once.
    pub idempotent: bool,
    /// SHA-256 of `input`: the call's identity check on replay.
    pub input_hash: String,
    pub describe: String,
    pub predicted: Value,
    pub run: Arc<dyn Fn(Cx) -> BoxFuture<Result<Value, ActionError>> + Send + Sync>,
    pub preview: Arc<dyn Fn(Cx) -> BoxFuture<Option<String>> + Send + Sync>,
    /// The answer in an assumed world: the call refused when its target is down, else
    /// [`Action::predict_in`].
    pub predict_in: PredictIn,
}

pub type PredictIn = Arc<dyn Fn(&world::World) -> Option<Result<Value, ActionError>> + Send + Sync>;

/// The engine's view of an action, without its types.
pub trait DynAction: Send + Sync {
    fn spec(&self) -> &Spec;
    fn input_schema(&self) -> schemars::schema::RootSchema;
    fn output_schema(&self) -> schemars::schema::RootSchema;
    fn prepare(&self, input: Value) -> Result<Prepared, FieldError>;
    /// Some of a call's fields, as written in the runbook (its literal values): a value the
    /// action cannot take, before anything runs. The fields not given are no mistake here.
    fn check_given(&self, given: Value) -> Option<FieldError>;
}

struct Typed<A: Action> {
    spec: Spec,
    _a: PhantomData<fn() -> A>,
}

pub fn input_hash(input: &Value) -> String {
    let bytes = serde_json::to_vec(input).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl<A: Action> DynAction for Typed<A> {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn input_schema(&self) -> schemars::schema::RootSchema {
        schemars::schema_for!(A::Input)
    }

    fn output_schema(&self) -> schemars::schema::RootSchema {
        schemars::schema_for!(A::Output)
    }

    fn check_given(&self, given: Value) -> Option<FieldError> {
        let e = serde_path_to_error::deserialize::<_, A::Input>(&given).err()?;
        let field = e.path().to_string();
        // A given field's mistake is named by its path. One at the top is about the map as a
        // whole: a field not given (serde names it once every given one has been read, and a
        // type of our own may word that its own way), which is no mistake here.
        (field != ".").then(|| FieldError {
            field,
            message: e.into_inner().to_string(),
        })
    }

    fn prepare(&self, input: Value) -> Result<Prepared, FieldError> {
        let typed: A::Input = serde_path_to_error::deserialize(&input).map_err(|e| {
            let field = e.path().to_string();
            let message = e.into_inner().to_string();
            FieldError {
                field: if field == "." { String::new() } else { field },
                message,
            }
        })?;
        if let Some((field, message)) =
            secret_text::check(&input, || schemars::schema_for!(A::Input))
        {
            return Err(FieldError { field, message });
        }
        let mut journal_input = serde_json::to_value(&typed).map_err(|e| FieldError {
            field: String::new(),
            message: e.to_string(),
        })?;
        // A field left out is not journaled (nor hashed) as null: an optional field needs
        // no attribute of its own to keep a call's identity as the script wrote it.
        if let Value::Object(fields) = &mut journal_input {
            fields.retain(|_, v| !v.is_null());
        }
        let predicted = serde_json::to_value(A::predict(&typed)).unwrap_or(Value::Null);
        let idempotent =
            A::idempotent(&typed).unwrap_or(self.spec.idempotency == Idempotency::Idempotent);
        let describe = A::describe(&typed);
        let for_world = typed.clone();
        let predict_in: PredictIn = Arc::new(move |w: &world::World| {
            // Serialized only here, offline: real runs never pay for it.
            if !A::ANSWERS_FOR_DOWN {
                let input = serde_json::to_value(&for_world).unwrap_or_default();
                if let Some(e) = w.refusal(&input) {
                    return Some(Err(e));
                }
            }
            A::predict_in(&for_world, w).map(|r| {
                r.and_then(|out| {
                    serde_json::to_value(out).map_err(|e| ActionError::permanent(e.to_string()))
                })
            })
        });
        let for_preview = typed.clone();
        let preview = Arc::new(move |cx: Cx| -> BoxFuture<Option<String>> {
            Box::pin(A::preview(for_preview.clone(), cx))
        });
        let run = Arc::new(move |cx: Cx| -> BoxFuture<Result<Value, ActionError>> {
            let input = typed.clone();
            Box::pin(async move {
                let out = A::run(input, cx).await?;
                serde_json::to_value(out).map_err(|e| ActionError::permanent(e.to_string()))
            })
        });
        Ok(Prepared {
            idempotent,
            input_hash: input_hash(&journal_input),
            input: journal_input,
            describe,
            predicted,
            run,
            preview,
            predict_in,
        })
    }
}

/// Every action the engine knows.
pub struct Registry {
    actions: Vec<Arc<dyn DynAction>>,
}

impl Registry {
    pub fn standard() -> Registry {
        let mut r = Registry {
            actions: Vec::new(),
        };
        r.add::<http::Get>();
        r.add::<http::Post>();
        r.add::<http::WaitHealthy>();
        r.add::<cloudfront::Invalidate>();
        r.add::<prom::Query>();
        r.add::<prom::Check>();
        r.add::<notify::Slack>();
        r.add::<notify::Webhook>();
        r.add::<shell::Run>();
        r.add::<shell::Read>();
        r.add::<time::Now>();
        r.add::<pg::Query>();
        r.add::<pg::Exec>();
        r.add::<pg::Status>();
        r.add::<pg::Replication>();
        r.add::<pg::WaitCaughtUp>();
        r.add::<pg::Promote>();
        r.add::<pg::Fence>();
        r.add::<pg::CreateReplicationSlot>();
        r.add::<pg::DropReplicationSlot>();
        r.add::<pg::SetConfig>();
        r.add::<pg::CreateRole>();
        r.add::<pg::Repoint>();
        r.add::<pg::Rewind>();
        r.add::<pg::BaseBackup>();
        r.add::<pg::Restart>();
        r.add::<redis::InfoAction>();
        r.add::<redis::RoleAction>();
        r.add::<redis::Promote>();
        r.add::<redis::Replicate>();
        r.add::<redis::Failover>();
        r.add::<redis::WaitSynced>();
        r.add::<redis::ClusterInfoAction>();
        r.add::<redis::ClusterNodesAction>();
        r.add::<redis::ClusterMeet>();
        r.add::<redis::MoveSlot>();
        r.add::<redis::Flush>();
        r.add::<redis::Command>();
        r.add::<dns::RecordsAction>();
        r.add::<dns::Get>();
        r.add::<dns::Upsert>();
        r.add::<dns::SetWeights>();
        r.add::<dns::Delete>();
        r.add::<dns::WaitChange>();
        r.add::<dns::HealthChecksAction>();
        r.add::<k8s::Get>();
        r.add::<k8s::PatchObject>();
        r.add::<k8s::CronJobState>();
        r.add::<k8s::Apply>();
        r.add::<k8s::Scale>();
        r.add::<k8s::SetEnv>();
        r.add::<k8s::RolloutStatus>();
        r.add::<k8s::RolloutUndo>();
        r.add::<k8s::Restart>();
        r.add::<k8s::Pods>();
        r.add::<k8s::Cordon>();
        r.add::<k8s::Uncordon>();
        r.add::<k8s::Drain>();
        r.add::<topology::Observe>();
        r.add::<topology::Verify>();
        r
    }

    pub fn add<A: Action>(&mut self) {
        self.actions.push(Arc::new(Typed::<A> {
            spec: A::spec(),
            _a: PhantomData,
        }));
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<dyn DynAction>> {
        self.actions
            .iter()
            .find(|a| a.spec().namespace == namespace && a.spec().name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn DynAction>> {
        self.actions.iter()
    }

    pub fn namespaces(&self) -> Vec<&'static str> {
        let mut ns: Vec<_> = self.actions.iter().map(|a| a.spec().namespace).collect();
        ns.dedup();
        ns
    }

    pub fn in_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<dyn DynAction>> + 'a {
        self.actions
            .iter()
            .filter(move |a| a.spec().namespace == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::{take_common, Invocation, Registry, Spec};
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn the_fields_every_action_takes_are_taken_out_or_named() {
        // (the call's map, what is taken, or the field at fault, and what is left)
        type Taken = (Option<u64>, Option<u32>, Option<u64>);
        let cases: &[(serde_json::Value, Result<Taken, &str>, serde_json::Value)] = &[
            (
                json!({"url": "x"}),
                Ok((None, None, None)),
                json!({"url": "x"}),
            ),
            (
                json!({"url": "x", "timeout": "2m", "retries": 3, "backoff": 1.5}),
                Ok((Some(120_000), Some(3), Some(1_500))),
                json!({"url": "x"}),
            ),
            (
                json!({"timeout": 10}),
                Ok((Some(10_000), None, None)),
                json!({}),
            ),
            (
                json!({"retries": 100}),
                Ok((None, Some(100), None)),
                json!({}),
            ),
            (json!({"retries": 101}), Err("retries"), json!(null)),
            (json!({"retries": -1}), Err("retries"), json!(null)),
            (json!({"retries": "3"}), Err("retries"), json!(null)),
            (json!({"timeout": "2 minuts"}), Err("timeout"), json!(null)),
            (json!({"backoff": -1}), Err("backoff"), json!(null)),
            (json!({"backoff": [1]}), Err("backoff"), json!(null)),
        ];
        for (given, expected, left) in cases {
            let serde_json::Value::Object(mut map) = given.clone() else {
                unreachable!()
            };
            match (take_common(&mut map), expected) {
                (Ok(c), Ok((timeout, retries, backoff))) => {
                    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
                    assert_eq!(
                        (ms(c.timeout), c.retries, ms(c.backoff)),
                        (*timeout, *retries, *backoff),
                        "{given}"
                    );
                    assert_eq!(&serde_json::Value::Object(map), left, "{given}");
                }
                (Err(e), Err(field)) => assert_eq!(e.field, *field, "{given}: {}", e.message),
                (got, _) => panic!("{given}: {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_doc_comment_becomes_one_paragraph() {
        // What `action!` passes on: each `///` line, with the space after the slashes.
        let cases = [
            (Spec::read("a", "b").described(" One line."), "One line."),
            (
                Spec::read("a", "b")
                    .described(concat!(" Wait until it is healthy", " (or failing).")),
                "Wait until it is healthy (or failing).",
            ),
            (
                Spec::change("a", "b").described(" Trailing space. "),
                "Trailing space.",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(spec.doc, want);
        }
    }

    #[test]
    fn every_action_says_what_it_does_in_one_clean_paragraph() {
        let registry = Registry::standard();
        let mut seen = std::collections::BTreeSet::new();
        for action in registry.iter() {
            let spec = action.spec();
            let name = spec.full_name();
            assert!(seen.insert(name.clone()), "{name} is registered twice");
            let doc = spec.doc;
            assert!(
                doc.starts_with(|c: char| c.is_uppercase()),
                "{name}: its doc starts {doc:?}"
            );
            assert!(doc.ends_with('.'), "{name}: its doc ends {doc:?}");
            assert!(
                !doc.contains("  "),
                "{name}: two spaces where lines join: {doc:?}"
            );
        }
        assert!(seen.len() >= 50, "only {} actions registered", seen.len());
    }

    #[test]
    fn a_suggested_run_is_spelled_as_the_operator_started_this_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rejoin.rhai"), "").unwrap();
        let here = dir.path().display().to_string();
        let status = format!("{here}/status.rhai");
        let cases: Vec<(&str, Invocation, String)> = vec![
            (
                "nothing known: placeholders",
                Invocation::default(),
                "runbook run runbooks/rejoin.rhai -i INVENTORY --var region=a".into(),
            ),
            (
                "beside the running runbook, with the inventory and store as given",
                Invocation::new(&status, Some("prod.toml"), " --state-dir /srv/rb"),
                format!("runbook run {here}/rejoin.rhai -i prod.toml --var region=a --state-dir /srv/rb"),
            ),
            (
                "not beside it: where the shipped runbooks are",
                Invocation::new("/nowhere/mine.rhai", Some("prod.toml"), ""),
                "runbook run runbooks/rejoin.rhai -i prod.toml --var region=a".into(),
            ),
            (
                "an inventory whose name needs quotes",
                Invocation::new("/nowhere/mine.rhai", Some("my prod.toml"), ""),
                "runbook run runbooks/rejoin.rhai -i 'my prod.toml' --var region=a".into(),
            ),
        ];
        for (what, invocation, want) in cases {
            assert_eq!(invocation.run("rejoin", " --var region=a"), want, "{what}");
        }
    }
}
