//! A bucket of one of the object stores the tests run against, each a
//! real server or its emulator on loopback, started by the project's
//! scripts: S3 (moto, `scripts/start-s3.sh`), Google Cloud Storage
//! (fake-gcs-server behind `scripts/gcs-xml-front.py`,
//! `scripts/start-gcs.sh`) and Azure Blob Storage (Azurite,
//! `scripts/start-azurite.sh`). Each test works below a prefix of its own
//! in the bucket (container) `sluice-test`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};

use crate::brokers;

pub(crate) const BUCKET: &str = "sluice-test";

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    S3,
    Gcs,
    Azure,
}

impl Kind {
    /// The URL scheme sluice knows the store by.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Kind::S3 => "s3",
            Kind::Gcs => "gs",
            Kind::Azure => "az",
        }
    }

    /// The server's address (overridable for a server elsewhere) and the
    /// script that starts it.
    fn endpoint(self) -> (String, &'static str) {
        let (variable, default, script) = match self {
            Kind::S3 => ("SLUICE_TEST_S3", "http://127.0.0.1:9000", "scripts/start-s3.sh"),
            Kind::Gcs => ("SLUICE_TEST_GCS", "http://127.0.0.1:4443", "scripts/start-gcs.sh"),
            Kind::Azure => ("SLUICE_TEST_AZURITE", "http://127.0.0.1:10000", "scripts/start-azurite.sh"),
        };
        (std::env::var(variable).unwrap_or_else(|_| default.into()), script)
    }
}

/// A service-account key for the GCS emulator: no OAuth, its address.
pub(crate) fn gcs_key(endpoint: &str) -> String {
    format!(
        r#"{{"disable_oauth":true,"gcs_base_url":"{endpoint}","client_email":"sluice-test@example.com","private_key":"","private_key_id":""}}"#
    )
}

/// Azurite's account.
pub(crate) const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// Azurite's well-known account key (the emulator's, public).
pub(crate) const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The store's server, and a prefix of its bucket for one test.
pub(crate) struct Bucket {
    pub(crate) kind: Kind,
    pub(crate) endpoint: String,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: String,
    pub(crate) runtime: tokio::runtime::Runtime,
}

impl Bucket {
    /// Fails, saying how to start it, when the server does not answer.
    pub(crate) fn new(kind: Kind, test: &str) -> Self {
        let (endpoint, script) = kind.endpoint();
        let store: Arc<dyn ObjectStore> = match kind {
            Kind::S3 => Arc::new(
                AmazonS3Builder::new()
                    .with_endpoint(&endpoint)
                    .with_allow_http(true)
                    .with_bucket_name(BUCKET)
                    .with_region("us-east-1")
                    .with_access_key_id("test")
                    .with_secret_access_key("test")
                    .build()
                    .expect("an S3 client"),
            ),
            Kind::Gcs => Arc::new(
                GoogleCloudStorageBuilder::new()
                    .with_bucket_name(BUCKET)
                    .with_service_account_key(gcs_key(&endpoint))
                    .with_client_options(ClientOptions::new().with_allow_http(true))
                    .build()
                    .expect("a GCS client"),
            ),
            // Azurite serves its account below its address, path-style.
            Kind::Azure => Arc::new(
                MicrosoftAzureBuilder::new()
                    .with_account(AZURITE_ACCOUNT)
                    .with_access_key(AZURITE_KEY)
                    .with_endpoint(format!("{endpoint}/{AZURITE_ACCOUNT}"))
                    .with_allow_http(true)
                    .with_container_name(BUCKET)
                    .build()
                    .expect("an Azure client"),
            ),
        };
        let bucket = Bucket { kind, endpoint, store, prefix: brokers::unique(test), runtime: brokers::runtime() };
        let listed = bucket.runtime.block_on(async {
            let list = bucket.store.list(Some(&ObjectPath::from("none")));
            tokio::time::timeout(Duration::from_secs(10), list.try_collect::<Vec<_>>()).await
        });
        match listed {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!(
                "these tests need a {kind:?} server at {} with the bucket {BUCKET}: {error}\nstart it with {script}",
                bucket.endpoint
            ),
            Err(_) => panic!("no answer from a {kind:?} server at {}\nstart it with {script}", bucket.endpoint),
        }
        bucket
    }

    /// `SCHEME://sluice-test/<prefix>/<below>`.
    pub(crate) fn url(&self, below: &str) -> String {
        format!("{}://{BUCKET}/{}/{below}", self.kind.scheme(), self.prefix)
    }

    /// The key of `below` in the bucket.
    pub(crate) fn key(&self, below: &str) -> String {
        format!("{}/{below}", self.prefix)
    }

    pub(crate) fn put(&self, below: &str, bytes: Vec<u8>) {
        let path = ObjectPath::from(self.key(below));
        self.runtime.block_on(self.store.put(&path, PutPayload::from(bytes))).expect("upload");
    }

    /// Copies every object below `below` to the folder `to`, keeping the
    /// names (`_sluice/...` included).
    pub(crate) fn download(&self, below: &str, to: &Path) -> usize {
        let root = ObjectPath::from(self.key(below));
        self.runtime.block_on(async {
            let listed: Vec<_> = self.store.list(Some(&root)).try_collect().await.expect("list");
            for meta in &listed {
                let relative: Vec<String> =
                    meta.location.prefix_match(&root).expect("below").map(|p| p.as_ref().to_string()).collect();
                let local = to.join(relative.join("/"));
                std::fs::create_dir_all(local.parent().expect("parent")).expect("folders");
                let bytes = self.store.get(&meta.location).await.expect("get").bytes().await.expect("bytes");
                std::fs::write(&local, &bytes).expect("write");
            }
            listed.len()
        })
    }

    /// How many objects below `below` a reader of the sink sees (none
    /// below a name starting with `_`).
    pub(crate) fn visible(&self, below: &str) -> usize {
        let root = ObjectPath::from(self.key(below));
        self.runtime.block_on(async {
            let listed: Vec<_> = self.store.list(Some(&root)).try_collect().await.expect("list");
            listed
                .iter()
                .filter(|meta| {
                    meta.location
                        .prefix_match(&root)
                        .is_some_and(|mut parts| parts.all(|p| !p.as_ref().starts_with('_')))
                })
                .count()
        })
    }

    /// The standard variables of the store that point a client at the
    /// server, as a user would set them.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::S3 => vec![
                ("AWS_ENDPOINT_URL", self.endpoint.clone()),
                ("AWS_ALLOW_HTTP", "true".into()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_REGION", "us-east-1".into()),
            ],
            Kind::Gcs => {
                vec![("GOOGLE_SERVICE_ACCOUNT_KEY", gcs_key(&self.endpoint)), ("GOOGLE_ALLOW_HTTP", "true".into())]
            }
            Kind::Azure => {
                vec![("AZURE_STORAGE_USE_EMULATOR", "true".into()), ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone())]
            }
        }
    }

    /// `[storage]` settings with the same effect, the secret read from the
    /// environment variable `secret_variable`, whose value is the second
    /// item.
    pub(crate) fn storage_table(&self, secret_variable: &str) -> (String, String) {
        match self.kind {
            Kind::S3 => (
                format!(
                    "[storage]\naws_endpoint = \"{}\"\naws_allow_http = true\naws_region = \"us-east-1\"\n\
                     aws_access_key_id = \"test\"\naws_secret_access_key = \"${{env:{secret_variable}}}\"\n",
                    self.endpoint
                ),
                "test".into(),
            ),
            Kind::Gcs => (
                format!(
                    "[storage]\ngoogle_service_account_key = \"${{env:{secret_variable}}}\"\n\
                     google_allow_http = true\n"
                ),
                gcs_key(&self.endpoint),
            ),
            Kind::Azure => (
                format!(
                    "[storage]\nazure_storage_use_emulator = true\nazure_storage_account_name = \"devstoreaccount1\"\n\
                     azure_storage_account_key = \"${{env:{secret_variable}}}\"\n"
                ),
                AZURITE_KEY.into(),
            ),
        }
    }
}
