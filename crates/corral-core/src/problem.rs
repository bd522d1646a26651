//! RFC 9457 problem details: the JSON body of every error answer Corral's HTTP APIs give.

use crate::validate::FieldError;
use serde::{Deserialize, Serialize};

/// Media type of a problem body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem. `field` is an extension member naming the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: u16, title: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".into(),
            title: title.into(),
            status,
            detail: None,
            instance: None,
            field: None,
        }
    }

    pub fn with_kind(mut self, kind: &str) -> Self {
        self.kind = kind.into();
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Names the request field (or header) at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400 for a request field that failed validation.
    pub fn invalid_field(err: FieldError) -> Self {
        Problem {
            kind: "/problems/invalid-field".into(),
            title: format!("Invalid field `{}`", err.field),
            status: 400,
            detail: Some(err.message),
            instance: None,
            field: Some(err.field),
        }
    }
}
