//! Who and where the current request comes from: set by the HTTP layer around each request,
//! read by whatever the request causes (audit records, problem bodies).

/// Who and where a request comes from, for the records it causes.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

tokio::task_local! {
    /// Set by the HTTP layer around each request.
    pub static REQUEST: RequestMeta;
}
