//! DynamoDB backends of the identity and usage ports (AWS, or anything speaking its API,
//! such as moto in tests). Each store keeps one table with a string partition key `pk` and
//! sort key `sk`; what an item is follows from its `pk` prefix (see each store). The tables
//! are created by `template.yaml` on AWS; [`ensure_table`] creates one elsewhere.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

/// Where the tables are: `dynamodb://<prefix>` names `<prefix>-identity` and
/// `<prefix>-usage`; `?endpoint=` and `&region=` override the SDK's defaults (environment,
/// profile, instance role), e.g. for a local moto or DynamoDB Local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl Location {
    pub const SCHEME: &'static str = "dynamodb://";

    pub fn parse(url: &str) -> Option<Result<Self, String>> {
        let rest = url.strip_prefix(Self::SCHEME)?;
        let (prefix, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut location = Self {
            prefix: prefix.trim_end_matches('/').to_string(),
            endpoint: None,
            region: None,
        };
        if location.prefix.is_empty()
            || !location
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Some(Err(format!(
                "`{url}`: the table prefix after dynamodb:// must be letters, digits, '-', '_' or '.'"
            )));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("endpoint", v)) => location.endpoint = Some(v.to_string()),
                Some(("region", v)) => location.region = Some(v.to_string()),
                _ => {
                    return Some(Err(format!(
                        "`{url}`: unknown parameter `{pair}` (endpoint=, region=)"
                    )));
                }
            }
        }
        Some(Ok(location))
    }

    pub fn identity_table(&self) -> String {
        format!("{}-identity", self.prefix)
    }

    pub fn usage_table(&self) -> String {
        format!("{}-usage", self.prefix)
    }

    pub async fn client(&self) -> Client {
        client(self.endpoint.as_deref(), self.region.as_deref()).await
    }
}

/// A client whose calls fail within a few seconds instead of hanging on an unreachable
/// endpoint: a store that does not answer must become a clear 503, not a stuck request.
pub async fn client(endpoint: Option<&str>, region: Option<&str>) -> Client {
    Client::new(
        &crate::aws::sdk_config(&crate::aws::AwsOptions {
            endpoint: endpoint.map(str::to_string),
            region: region.map(str::to_string),
            static_credentials: None,
            call_timeout: None,
            max_attempts: None,
        })
        .await,
    )
}

/// Creates `table` (on-demand billing, `pk`/`sk` strings) unless it exists.
pub async fn ensure_table(client: &Client, table: &str) -> Result<(), String> {
    let described = client.describe_table().table_name(table).send().await;
    match described {
        Ok(_) => return Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(error_text(e)),
    }
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition")
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema")
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        // Another process created it meanwhile.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(error_text(e)),
    }
}

/// An SDK error with the service's own message.
pub fn error_text<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> String {
    DisplayErrorContext(e).to_string()
}

/// Whether a transaction was cancelled because one of its conditions failed (another
/// writer got there first), as opposed to the store being unreachable.
pub fn is_condition_failure<R: std::fmt::Debug>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.is_transaction_canceled_exception())
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Fixed-width decimal, so string order is number order in sort keys.
pub fn sortable(value: u64) -> String {
    format!("{value:020}")
}

pub fn get_s<'a>(
    item: &'a std::collections::HashMap<String, AttributeValue>,
    name: &str,
) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn get_n(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_their_tables_and_endpoint() {
        let l = Location::parse(
            "dynamodb://imgfleet-prod?endpoint=http://127.0.0.1:5799&region=eu-west-1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.identity_table(), "imgfleet-prod-identity");
        assert_eq!(l.usage_table(), "imgfleet-prod-usage");
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:5799"));
        assert_eq!(l.region.as_deref(), Some("eu-west-1"));
        assert!(Location::parse("postgres://x").is_none());
        assert!(Location::parse("dynamodb://").unwrap().is_err());
        assert!(Location::parse("dynamodb://a b").unwrap().is_err());
        assert!(Location::parse("dynamodb://a?colour=red").unwrap().is_err());
    }

    #[test]
    fn sortable_numbers_sort_as_strings() {
        assert!(sortable(9) < sortable(10));
        assert!(sortable(1_700_000_000_000) < sortable(17_000_000_000_000));
    }
}
