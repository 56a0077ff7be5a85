//! RFC 9457 problem details: the one shape of every non-2xx response from both services.

use std::fmt;
use std::marker::PhantomData;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object, payload::Json};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One field that failed validation, named as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct FieldError {
    /// The field or parameter, e.g. `name` or `tags[2]`.
    pub field: String,
    pub message: String,
}

/// The body of an RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "Problem")]
pub struct ProblemBody {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    #[oai(validator(minimum(value = "400"), maximum(value = "599")))]
    pub status: u16,
    /// What went wrong in this occurrence, written for the person reading it.
    pub detail: String,
    /// Each field that failed validation (422 only).
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldError>>,
    /// Extra, problem-specific data, e.g. the candidate instants of an ambiguous local time.
    #[oai(skip_serializing_if_is_none)]
    pub extensions: Option<serde_json::Value>,
}

/// An error answer: a status, a problem body and any headers it needs (`Retry-After`, ...).
/// Handlers return `Result<_, Problem>`; each service maps its own error type into this.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    // Boxed: `Result<_, Problem>` is on every handler's return path; keep it small.
    body: Box<ProblemBody>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem whose type is `about:blank`: the title is the status' reason phrase.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::typed(
            status,
            "about:blank",
            status.canonical_reason().unwrap_or("Error"),
            detail,
        )
    }

    /// A problem of a named kind; `kind` becomes the type URI `urn:meridian:problem:{kind}`.
    pub fn typed(
        status: StatusCode,
        kind: &str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let problem_type = if kind == "about:blank" {
            kind.to_owned()
        } else {
            format!("urn:meridian:problem:{kind}")
        };
        Self {
            status,
            body: Box::new(ProblemBody {
                problem_type,
                title: title.into(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: None,
                extensions: None,
            }),
            headers: Vec::new(),
        }
    }

    /// 422 with one entry per invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut problem = Self::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
            "The request is not valid",
            detail,
        );
        problem.body.errors = Some(errors);
        problem
    }

    /// A 500 whose detail says nothing about internals; the cause belongs in the log.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server failed to handle this request; the request id in the response headers finds it in the logs.",
        )
    }

    pub fn with_extensions(mut self, extensions: serde_json::Value) -> Self {
        self.body.extensions = Some(extensions);
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &ProblemBody {
        &self.body
    }

    /// Turns any error that reached the edge of the app into a problem. Our own problems pass
    /// through unchanged; framework errors (routing, parsing, auth) keep their status and message;
    /// a server error keeps its status but not its message, which may describe internals.
    pub fn from_poem_error(err: poem::Error) -> Self {
        if let Some(problem) = err.downcast_ref::<Problem>() {
            return problem.clone();
        }
        let status = err.status();
        if status.is_server_error() {
            tracing::error!(error = %err, status = status.as_u16(), "request failed");
            let mut problem = Self::internal();
            problem.status = status;
            problem.body.status = status.as_u16();
            problem.body.title = status.canonical_reason().unwrap_or("Error").to_owned();
            return problem;
        }
        if status == StatusCode::UNAUTHORIZED {
            // The framework's own text ("authorization error") does not say what to send.
            return Self::new(
                status,
                "this operation needs credentials; see securitySchemes in /openapi.json",
            );
        }
        Self::new(status, err.to_string())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.body.title,
            self.body.detail
        )
    }
}

impl std::error::Error for Problem {}

impl poem::error::ResponseError for Problem {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        self.clone().into_response()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&poem_openapi::types::ToJSON::to_json(&self.body))
            .unwrap_or_default();
        let mut response = Response::builder()
            .status(self.status)
            .content_type(CONTENT_TYPE)
            .body(body);
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// How the OpenAPI document describes every error: a problem document under any status.
#[derive(ApiResponse)]
#[allow(dead_code)] // exists only for its OpenAPI description
enum ProblemDoc {
    /// An error: RFC 9457 problem details. The status and `type` say which.
    #[oai(content_type = "application/problem+json")]
    Default(StatusCode, Json<ProblemBody>),
}

impl ApiResponse for Problem {
    fn meta() -> MetaResponses {
        ProblemDoc::meta()
    }

    fn register(registry: &mut Registry) {
        ProblemDoc::register(registry);
    }
}

/// The error answers one operation can give: each status it truly answers, with what it means
/// there. An operation returns `Result<_, Errors<Its>>`, so its entry in the OpenAPI document
/// lists exactly these statuses instead of one catch-all `default`.
pub trait ErrorStatuses: Send + Sync + 'static {
    const ANSWERS: &'static [(u16, &'static str)];
}

/// A problem answered by an operation whose possible errors are `S`. Anything that becomes a
/// [`Problem`] becomes this, so handlers use `?` as before; the answer on the wire is the
/// problem itself.
pub struct Errors<S>(Problem, PhantomData<fn() -> S>);

impl<S> Errors<S> {
    pub fn problem(&self) -> &Problem {
        &self.0
    }
}

impl<S, E: Into<Problem>> From<E> for Errors<S> {
    fn from(err: E) -> Self {
        Self(err.into(), PhantomData)
    }
}

impl<S> From<Errors<S>> for poem::Error {
    fn from(err: Errors<S>) -> Self {
        err.0.into()
    }
}

/// hyper answers these itself, before any handler runs, with an empty body.
const BODILESS_STATUSES: [u16; 1] = [431];

fn retry_after(required: bool, description: &str) -> MetaHeader {
    MetaHeader {
        name: "Retry-After".to_owned(),
        description: Some(description.to_owned()),
        required,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("int32"),
            minimum: Some(1.0),
            maximum: Some(86_400.0),
            ..MetaSchema::new("integer")
        })),
    }
}

impl<S: ErrorStatuses> ApiResponse for Errors<S> {
    fn meta() -> MetaResponses {
        let problem = || MetaMediaType {
            content_type: CONTENT_TYPE,
            schema: ProblemBody::schema_ref(),
        };
        MetaResponses {
            responses: S::ANSWERS
                .iter()
                .map(|&(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: if BODILESS_STATUSES.contains(&status) {
                        Vec::new()
                    } else {
                        vec![problem()]
                    },
                    headers: match status {
                        429 => vec![retry_after(true, "Seconds to wait before trying again.")],
                        503 => vec![retry_after(
                            false,
                            "Seconds to wait before trying again, when the cause is passing \
                             (overload, a deadline, the database); absent for an injected fault \
                             or a service that is not ready.",
                        )],
                        _ => Vec::new(),
                    },
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ProblemBody::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn problem_is_rfc9457_json() {
        let response = Problem::new(StatusCode::NOT_FOUND, "no item 42").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.content_type(), Some(CONTENT_TYPE));
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().into_vec().await.unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "about:blank", "title": "Not Found", "status": 404, "detail": "no item 42"
            })
        );
    }

    #[test]
    fn server_errors_hide_their_message() {
        let err = poem::Error::from_string("db password=xyz refused", StatusCode::BAD_GATEWAY);
        let problem = Problem::from_poem_error(err);
        assert_eq!(problem.status(), StatusCode::BAD_GATEWAY);
        assert!(!problem.body().detail.contains("xyz"));
    }

    #[test]
    fn client_errors_keep_their_message() {
        let err =
            poem::Error::from_string("failed to parse parameter `limit`", StatusCode::BAD_REQUEST);
        assert!(
            Problem::from_poem_error(err)
                .body()
                .detail
                .contains("limit")
        );
    }
}
