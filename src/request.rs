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

    /// Set by the HTTP layer around each routed request: the receipt of the last audit record
    /// the request queued, which resolves once that record (and every one queued before it)
    /// is stored. The request is answered only then, so an answered request's records survive
    /// a crash of the process.
    pub static AUDIT_RECEIPT: std::cell::RefCell<Option<tokio::sync::oneshot::Receiver<()>>>;
}

/// Runs `work` (a request's handling) and then waits until the audit records it queued are
/// stored.
pub async fn with_durable_audit<T>(work: impl std::future::Future<Output = T>) -> T {
    AUDIT_RECEIPT
        .scope(std::cell::RefCell::new(None), async {
            let answer = work.await;
            let receipt = AUDIT_RECEIPT.with(|r| r.borrow_mut().take());
            if let Some(receipt) = receipt
                && receipt.await.is_err()
            {
                tracing::error!("the audit writer stopped before storing this request's records");
            }
            answer
        })
        .await
}
