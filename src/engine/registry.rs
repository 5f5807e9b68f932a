//! Registered functions of one engine. No global state: two engines in one process have
//! separate registries.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::Ctx;
use crate::api::{ActivityError, FunctionHandle, RetryPolicy};
use crate::error::Error;
use crate::lease::Limiter;
use crate::storage::records::TaskKind;

pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, ActivityError>> + Send>>;
pub type ActivityHandler = Arc<dyn Fn(Vec<u8>) -> TaskFuture + Send + Sync>;
pub type WorkflowFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, Error>> + Send>>;
pub type WorkflowHandler = Arc<dyn Fn(Ctx, Vec<u8>) -> WorkflowFuture + Send + Sync>;

/// How a function runs: an activity once per attempt, a workflow over its journal.
#[derive(Clone)]
pub enum Handler {
    Activity(ActivityHandler),
    Workflow(WorkflowHandler),
}

impl Handler {
    pub fn kind(&self) -> TaskKind {
        match self {
            Handler::Activity(_) => TaskKind::Activity,
            Handler::Workflow(_) => TaskKind::Workflow,
        }
    }
}

pub struct Function {
    pub name: &'static str,
    pub handler: Handler,
    pub retry: RetryPolicy,
    pub queue: String,
    pub priority: i32,
    pub timeout: Option<Duration>,
    pub limiter: Limiter,
    /// `cached(ttl)`: results reused by (name, version, input) until the TTL.
    pub cache: Option<crate::storage::records::CachePolicy>,
    /// Whether a JSON input decodes as the function's declared input type (an operator's
    /// replay input is checked with it before anything changes).
    pub input_check: InputCheck,
    /// The version of this code (`FunctionOptions::version`, default 1): what its new tasks
    /// and executions record, and the newest it claims.
    pub version: u32,
    /// `FunctionOptions::cancel_grace`: a cancel lets the workflow compensate this long.
    pub cancel_grace: Option<Duration>,
    /// Rate limits and the concurrency-key limit, enforced by its claims.
    pub limits: crate::storage::ClaimLimits,
}

/// Decodes a JSON input as a function's input type: `Err` carries serde's reason.
pub type InputCheck = fn(&[u8]) -> Result<(), String>;

/// The `InputCheck` of input type `T`.
pub fn input_check<T: serde::de::DeserializeOwned>(input: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(input).map(|_| ()).map_err(|e| e.to_string())
}

impl Function {
    /// A function with the defaults: queue "default", priority 0, no attempt timeout, no
    /// concurrency limit, not cached.
    pub fn new(name: &'static str, handler: Handler, retry: RetryPolicy) -> Self {
        Function {
            name,
            handler,
            retry,
            queue: "default".to_string(),
            priority: 0,
            timeout: None,
            limiter: Limiter::new(0),
            cache: None,
            input_check: |_| Ok(()),
            version: 1,
            cancel_grace: None,
            limits: Default::default(),
        }
    }
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Wraps a typed workflow into the byte-level handler: JSON in, JSON out.
pub fn workflow_handler<H, F, Fut>(handle: H, f: F) -> Handler
where
    H: FunctionHandle,
    F: Fn(Ctx, H::Input) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<H::Output, Error>> + Send + 'static,
{
    let f = Arc::new(f);
    let name = handle.name();
    Handler::Workflow(Arc::new(move |ctx: Ctx, input: Vec<u8>| {
        let f = f.clone();
        Box::pin(async move {
            let input = serde_json::from_slice(&input).map_err(|e| Error::Payload {
                function: name.to_string(),
                reason: format!("input does not decode: {e}"),
            })?;
            let output = f(ctx, input).await?;
            serde_json::to_vec(&output).map_err(|e| Error::Payload {
                function: name.to_string(),
                reason: format!("output does not encode: {e}"),
            })
        }) as WorkflowFuture
    }))
}

/// Wraps a typed async function into the byte-level handler the workers run: JSON in, JSON out.
pub fn handler<F, Fut>(handle: F::Handle, f: F) -> Handler
where
    F: TypedFn<Fut>,
    Fut: Future<Output = Result<<F::Handle as FunctionHandle>::Output, ActivityError>> + Send + 'static,
{
    let f = Arc::new(f);
    let name = handle.name();
    Handler::Activity(Arc::new(move |input: Vec<u8>| {
        let f = f.clone();
        Box::pin(async move {
            let input = serde_json::from_slice(&input).map_err(|e| {
                ActivityError::permanent(format!("input of {name:?} does not decode: {e}")).with_code("bad_input")
            })?;
            let output = f.call(input).await?;
            serde_json::to_vec(&output).map_err(|e| {
                ActivityError::permanent(format!("output of {name:?} does not encode: {e}")).with_code("bad_output")
            })
        }) as TaskFuture
    }))
}

/// An async fn taking the handle's input. Implemented for closures; exists so the handle's
/// types drive inference.
pub trait TypedFn<Fut>: Send + Sync + 'static {
    type Handle: FunctionHandle;
    fn call(&self, input: <Self::Handle as FunctionHandle>::Input) -> Fut;
}

pub struct Bound<H, F> {
    pub f: F,
    _h: std::marker::PhantomData<fn() -> H>,
}

impl<H, F> Bound<H, F> {
    pub fn new(f: F) -> Self {
        Bound { f, _h: std::marker::PhantomData }
    }
}

impl<H, F, Fut> TypedFn<Fut> for Bound<H, F>
where
    H: FunctionHandle,
    F: Fn(H::Input) -> Fut + Send + Sync + 'static,
{
    type Handle = H;
    fn call(&self, input: H::Input) -> Fut {
        (self.f)(input)
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    functions: BTreeMap<&'static str, Arc<Function>>,
}

impl Registry {
    pub fn insert(&mut self, function: Function) -> Result<(), Error> {
        if self.functions.contains_key(function.name) {
            return Err(Error::Config(format!("function {:?} is registered twice", function.name)));
        }
        self.functions.insert(function.name, Arc::new(function));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Function>> {
        self.functions.get(name)
    }

    /// The function, or the error a user should see: the name and what is registered.
    pub fn require(&self, name: &str) -> Result<&Arc<Function>, Error> {
        self.get(name).ok_or_else(|| Error::UnknownFunction {
            name: name.to_string(),
            registered: self.functions.keys().filter(|k| !k.starts_with("stent.")).map(|k| k.to_string()).collect(),
        })
    }
}
