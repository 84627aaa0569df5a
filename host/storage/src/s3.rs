//! S3 (AWS proper, or MinIO / Garage through `S3_ENDPOINT`) with per-request credentials.

use std::path::Path;

use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use crate::{Conditional, Expect, StorageError, Store};

/// Files above this size are uploaded in parts of this size.
const PART_BYTES: usize = 16 << 20;

/// Where and as whom to write. Credentials come with each request; the endpoint from config.
#[derive(Clone)]
pub struct S3Target {
    /// A custom endpoint (MinIO, Garage): path-style addressing. `None`: AWS S3 proper.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// `If-None-Match: *` or `If-Match: tag` (RFC 9110 §13.1) on a PutObject.
fn with_precondition(
    put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    expect: &Expect,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    match expect {
        Expect::Absent => put.if_none_match("*"),
        Expect::Tag(t) => put.if_match(t),
    }
}

/// An S3 bucket.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Sends presigned requests ([`Store::put_if`] with a validity).
    http: reqwest::Client,
}

impl S3Store {
    pub fn new(t: S3Target) -> Self {
        let creds = Credentials::new(
            t.access_key_id,
            t.secret_access_key,
            t.session_token,
            None,
            "sluice-request",
        );
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new(t.region))
            .credentials_provider(creds)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(5));
        if let Some(ep) = t.endpoint {
            // MinIO and Garage: path-style; and no streaming checksums, which Garage rejects.
            b = b
                .endpoint_url(ep)
                .force_path_style(true)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: t.bucket,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    /// A conditional PUT as a presigned request that the server refuses once `valid_for`
    /// has passed since signing (`X-Amz-Expires`).
    async fn put_presigned(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: &Conditional,
        valid_for: std::time::Duration,
    ) -> Result<(), StorageError> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(
            std::time::Duration::from_secs(valid_for.as_secs().max(1)),
        )
        .map_err(|e| self.err("PutObject", key, e))?;
        let put = self.client.put_object().bucket(&self.bucket).key(key);
        let signed = with_precondition(put, &cond.expect)
            .presigned(config)
            .await
            .map_err(|e| self.err("PutObject", key, e))?;
        let mut req = self.http.put(signed.uri());
        for (name, value) in signed.headers() {
            req = req.header(name, value);
        }
        // Without the URL: it is the signed request (its signature and key id in the query),
        // replayable until it expires, and the error ends up in the run's status.
        let answer = req
            .body(bytes)
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, e.without_url()))?;
        match answer.status().as_u16() {
            200..=299 => Ok(()),
            409 | 412 => Err(StorageError::Precondition { key: key.into() }),
            code => {
                let body = answer.text().await.unwrap_or_default();
                // Garage and S3 answer an expired presigned request 400/403 with this text.
                let expired = body.contains("too old") || body.contains("expired");
                Err(StorageError::Backend {
                    op: "PutObject",
                    url: self.url(key),
                    message: if expired {
                        format!(
                            "HTTP {code}: the write arrived after its validity ended (the writer stalled); refused"
                        )
                    } else {
                        format!(
                            "HTTP {code}: {}",
                            body.chars().take(300).collect::<String>()
                        )
                    },
                })
            }
        }
    }

    fn err<E: std::error::Error + 'static>(
        &self,
        op: &'static str,
        key: &str,
        e: E,
    ) -> StorageError {
        StorageError::Backend {
            op,
            url: self.url(key),
            message: error_chain(&e),
        }
    }

    async fn put_multipart(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut file =
                tokio::fs::File::open(path)
                    .await
                    .map_err(|source| StorageError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
            let mut parts = Vec::new();
            let mut number = 1;
            loop {
                let mut buf = Vec::with_capacity(PART_BYTES);
                (&mut file)
                    .take(PART_BYTES as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|source| StorageError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
                if buf.is_empty() {
                    break;
                }
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(buf))
                    .send()
                    .await
                    .map_err(|e| self.err("UploadPart", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                );
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|source| StorageError::Io {
                path: path.display().to_string(),
                source,
            })?
            .len();
        if len as usize > PART_BYTES {
            return self.put_multipart(key, path).await;
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| StorageError::Io {
                path: path.display().to_string(),
                source,
            })?;
        self.put_bytes(key, bytes).await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, e))?;
        Ok(())
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get_tagged(key).await?.map(|(bytes, _)| bytes))
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StorageError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let tag = out.e_tag().unwrap_or_default().to_string();
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.err("GetObject", key, e))?;
                Ok(Some((data.into_bytes().to_vec(), tag)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.err("GetObject", key, e)),
        }
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: &Conditional,
    ) -> Result<(), StorageError> {
        if let Some(valid_for) = cond.valid_for {
            return self.put_presigned(key, bytes, cond, valid_for).await;
        }
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes));
        match with_precondition(put, &cond.expect).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                Err(StorageError::Precondition { key: key.into() })
            }
            Err(e) => Err(self.err("PutObject", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, e))?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("DeleteObject", key, e))?;
        Ok(())
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }
}

/// An error and its sources, each by its `Display`, joined with `: ` (a source whose text the
/// previous one already shows is left out). Not the SDK's `DisplayErrorContext`, which appends
/// the error's `Debug` form: internal structures, raw responses, unreadable in a run status.
/// S3's own error (its `ErrorMetadata`, whose `Display` is a debug form, `Error { code: …,
/// message: … }`) is shown as `Code: message`, and the SDK's wrappers around it (`service
/// error`, `unhandled error (Code)`) are left out: `GetObject s3://b/k: AccessDenied: Forbidden`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut from_s3 = false;
    let mut next = Some(e);
    while let Some(err) = next {
        let text = match err.downcast_ref::<aws_sdk_s3::error::ErrorMetadata>() {
            Some(meta) => {
                from_s3 = true;
                match (meta.code(), meta.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_string(),
                    (None, Some(message)) => message.to_string(),
                    (None, None) => "an error without code or message".to_string(),
                }
            }
            None => err.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    if from_s3 {
        parts.retain(|p| p != "service error" && !p.starts_with("unhandled error ("));
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An S3 error the SDK does not model (Garage's and AWS's `AccessDenied` on GetObject) reads
    /// `AccessDenied: Forbidden…`, not `service error: unhandled error (AccessDenied): Error {
    /// code: "AccessDenied", message: … }`.
    #[test]
    fn an_s3_error_reads_as_its_code_and_message() {
        let meta = aws_sdk_s3::error::ErrorMetadata::builder()
            .code("AccessDenied")
            .message("Forbidden: Operation is not allowed for this key.")
            .build();
        let e = aws_sdk_s3::operation::get_object::GetObjectError::generic(meta);
        assert_eq!(
            error_chain(&e),
            "AccessDenied: Forbidden: Operation is not allowed for this key."
        );
    }

    /// A presigned write that fails to connect says why, never with its signed URL (the
    /// signature and the access key id are in its query; reqwest's errors print the URL).
    #[tokio::test]
    async fn a_failed_presigned_write_does_not_show_its_signed_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let store = S3Store::new(S3Target {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: "us-east-1".into(),
            bucket: "b".into(),
            access_key_id: "AKIDEXAMPLEKEYID".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: None,
        });
        let cond = Conditional {
            expect: Expect::Absent,
            valid_for: Some(std::time::Duration::from_secs(30)),
        };
        let e = store
            .put_if("conn/_state.json", b"{}".to_vec(), &cond)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3://b/conn/_state.json"), "{e}");
        assert!(e.contains("Connection refused"), "{e}");
        for leak in ["Signature", "AKIDEXAMPLEKEYID", "X-Amz", "Error {", "Os {"] {
            assert!(!e.contains(leak), "{leak} in {e}");
        }
    }
}
