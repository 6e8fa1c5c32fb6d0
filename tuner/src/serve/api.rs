//! The HTTP API (`/api/v1`) and the dashboard page (`/`).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz`, `/api/v1/healthz` | `{"status":"ok"}` (no token needed) |
//! | POST | `/api/v1/studies[?name=N]` | body: a study config (TOML) → 201 + the study; 400 naming the key |
//! | GET | `/api/v1/studies` | every study (state, progress, best, verdict) |
//! | GET | `/api/v1/studies/{id}` | one study with its trials, workers and tuned TOML |
//! | POST | `/api/v1/studies/{id}/cancel` | 200 + the study; 409 once ended |
//! | GET | `/api/v1/studies/{id}/tuned.toml` | the tuned TOML (404 until finished) |
//!
//! Errors are `{"error": "…"}`. With a token every `/api/v1` route except
//! the health check needs `Authorization: Bearer <token>` (401 otherwise);
//! bodies above the cap get 413.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::registry::{Registry, RequestError, StudyState};
use super::view;
use crate::storage::PgStore;

/// The dashboard: one page of HTML and JS, no build step.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What every handler shares.
pub struct AppState {
    /// The study queue.
    pub registry: Arc<Registry>,
    /// The database the views read (PostgreSQL storage).
    pub store: Option<PgStore>,
    /// SHA-256 of the bearer token (None: no token, loopback only).
    pub token_digest: Option<[u8; 32]>,
}

type Shared = Arc<AppState>;

/// A JSON error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let code = match &e {
            RequestError::BadConfig(_) => StatusCode::BAD_REQUEST,
            RequestError::UnknownStudy(_) => StatusCode::NOT_FOUND,
            RequestError::AlreadyEnded { .. } => StatusCode::CONFLICT,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if code == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{e}");
        }
        ApiError(code, e.to_string())
    }
}

impl From<super::ServeError> for ApiError {
    fn from(e: super::ServeError) -> Self {
        tracing::error!("{e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn not_found(id: u64) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no study {id}"))
}

/// SHA-256 of a token: compared in constant time, and the same length
/// whatever the token's, so the comparison leaks neither.
pub fn token_digest(token: &str) -> [u8; 32] {
    crate::hash::sha256(token.as_bytes())
}

async fn require_token(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Some(want) = &s.token_digest else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| token_digest(t.trim()));
    match given {
        Some(d) if bool::from(d.ct_eq(want)) => next.run(req).await,
        Some(_) => ApiError(StatusCode::UNAUTHORIZED, "wrong bearer token".into()).into_response(),
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "this daemon needs `Authorization: Bearer <token>`".into(),
        )
        .into_response(),
    }
}

/// The router: API, health check and dashboard, with the body cap.
pub fn router(state: Shared, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/studies", post(submit).get(list))
        .route("/studies/{id}", get(one))
        .route("/studies/{id}/cancel", post(cancel))
        .route("/studies/{id}/tuned.toml", get(tuned))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/healthz", get(health));
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(health))
        .nest("/api/v1", api)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD))
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Deserialize)]
struct SubmitQuery {
    name: Option<String>,
}

async fn submit(
    State(s): State<Shared>,
    Query(q): Query<SubmitQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<view::StudySummary>), ApiError> {
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be a study config in UTF-8 TOML: {e}"),
        )
    })?;
    let reg = Arc::clone(&s.registry);
    let name = q.name.clone();
    let text = text.to_string();
    // Checking a config reads its data index: off the async threads.
    let record = tokio::task::spawn_blocking(move || reg.submit(&text, name.as_deref()))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let d = view::detail(&s.registry, s.store.as_ref(), record.id)
        .await?
        .ok_or_else(|| not_found(record.id))?;
    Ok((StatusCode::CREATED, Json(d.summary)))
}

async fn list(State(s): State<Shared>) -> Result<Json<Vec<view::StudySummary>>, ApiError> {
    Ok(Json(view::list(&s.registry, s.store.as_ref()).await?))
}

async fn one(
    State(s): State<Shared>,
    Path(id): Path<u64>,
) -> Result<Json<view::StudyDetail>, ApiError> {
    view::detail(&s.registry, s.store.as_ref(), id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

async fn cancel(
    State(s): State<Shared>,
    Path(id): Path<u64>,
) -> Result<Json<view::StudyDetail>, ApiError> {
    s.registry.cancel(id)?;
    view::detail(&s.registry, s.store.as_ref(), id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

async fn tuned(State(s): State<Shared>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let record = s.registry.record(id).ok_or_else(|| not_found(id))?;
    if record.state != StudyState::Finished {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "study {id} is {}: its tuned TOML exists once it has finished",
                record.state.as_str()
            ),
        ));
    }
    let path = s.registry.study_dir(id).join(crate::study::TUNED_FILE);
    let text = std::fs::read_to_string(&path).map_err(super::ServeError::io(&path))?;
    Ok((
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        text,
    )
        .into_response())
}
