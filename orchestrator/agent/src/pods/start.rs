//! Starting and stopping one container: environment, mounts and limits from the spec, the
//! runtime call, the events kubectl users expect (Pulled, Created, Started, Failed, Killing),
//! the waiting reasons (CreateContainerConfigError, ErrImagePull, ImagePullBackOff), and the
//! postStart and preStop hooks.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use skiff_api::quantity::Quantity;

use super::status::Waiting;
use super::worker::Worker;
use crate::env::{EnvContext, resolve};
use crate::probes::{Outcome, run_exec, run_http, run_tcp};
use crate::runtime::{ContainerConfig, ContainerInfo, ContainerState, Error as RuntimeError};
use crate::volumes::{PreparedVolume, VolumeContext, VolumeError, container_mounts, prepare};

fn quantity(c: &Container, section: &str, resource: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let map = if section == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?;
    Quantity::parse(&map.get(resource)?.0).ok()
}

impl Worker {
    pub(crate) async fn prepare_volumes(
        &self,
    ) -> Result<HashMap<String, PreparedVolume>, VolumeError> {
        let ip = self
            .sandbox
            .as_ref()
            .map(|s| s.ip.clone())
            .unwrap_or_default();
        prepare(&VolumeContext {
            pod: &self.pod,
            pod_dir: &self.ctx.pod_dir(&self.pod_ref.uid),
            source: &self.ctx.source,
            client: Some(&self.ctx.client),
            node_name: &self.ctx.config.node_name,
            pod_ip: &ip,
            host_ip: &self.ctx.node_ip,
            host_path_map: &self.ctx.config.host_path_map(),
        })
        .await
    }

    /// Start attempt `attempt` of container `c`; failures become waiting reasons and events.
    pub(crate) async fn start(
        &mut self,
        c: &Container,
        attempt: u32,
        init: bool,
        volumes: &HashMap<String, PreparedVolume>,
    ) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        tracing::info!(container = %c.name, attempt, init, sandbox = %sandbox.id, "starting container");
        let started = Instant::now();
        let env_ctx = EnvContext {
            pod: &self.pod,
            node_name: &self.ctx.config.node_name,
            pod_ip: &sandbox.ip,
            host_ip: &self.ctx.node_ip,
            node_cpu: self.ctx.node_cpu,
            node_memory: self.ctx.node_memory,
            source: &self.ctx.source,
            base: self.ctx.service_env(),
        };
        let (env, command, args) = match resolve(&env_ctx, c).await {
            Ok(v) => v,
            Err(e) => return self.config_error(c, format!("Error: {e}")),
        };
        let mounts = match container_mounts(c, volumes) {
            Ok(m) => m,
            Err(e) => return self.config_error(c, format!("Error: {e}")),
        };
        let image = c.image.clone().unwrap_or_default();
        let present = self
            .ctx
            .runtime
            .image_id(&image)
            .await
            .ok()
            .flatten()
            .is_some();
        if let Some(failed_at) = self.pull_failed.get(&c.name).copied().filter(|_| !present) {
            // Pull failures back off like crashes.
            let key = format!("{}/pull", self.backoff_key(&c.name));
            let wait = self.ctx.backoff.lock().expect("backoff").remaining(
                &key,
                failed_at,
                jiff::Timestamp::now(),
            );
            if let Some(wait) = wait {
                let message = format!("Back-off pulling image \"{image}\"");
                self.ctx.events.pod(
                    &self.pod,
                    Some(&c.name),
                    "Normal",
                    "BackOff",
                    message.clone(),
                );
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "ImagePullBackOff".into(),
                        message,
                    },
                );
                self.changed_after(wait);
                return;
            }
        }
        let log_path = self.ctx.log_path(&self.pod_ref, &c.name, attempt);
        let config = ContainerConfig {
            pod: self.pod_ref.clone(),
            name: c.name.clone(),
            attempt,
            image: image.clone(),
            command,
            args,
            env,
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            mounts,
            cpu_limit_milli: quantity(c, "limits", "cpu").map_or(0, |q| q.milli()),
            cpu_request_milli: quantity(c, "requests", "cpu").map_or(0, |q| q.milli()),
            memory_limit_bytes: quantity(c, "limits", "memory").map_or(0, |q| q.value()),
            log_path: log_path.clone(),
            labels: BTreeMap::new(),
            init,
            tty: c.tty.unwrap_or(false),
            pod_dir: self.ctx.pod_dir(&self.pod_ref.uid),
        };
        match self.ctx.runtime.start_container(&sandbox, &config).await {
            Ok(info) => {
                self.pull_failed.remove(&c.name);
                self.ctx.metrics.container_starts.inc();
                self.ctx
                    .metrics
                    .start_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.waiting.remove(&c.name);
                self.ctx
                    .link_container_log(&self.pod_ref, &c.name, &info.container_id, &log_path);
                if present {
                    self.ctx.events.pod(
                        &self.pod,
                        Some(&c.name),
                        "Normal",
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                    );
                } else {
                    self.ctx.events.pod(
                        &self.pod,
                        Some(&c.name),
                        "Normal",
                        "Pulled",
                        format!("Successfully pulled image \"{image}\""),
                    );
                }
                self.ctx.events.pod(
                    &self.pod,
                    Some(&c.name),
                    "Normal",
                    "Created",
                    format!("Created container: {}", c.name),
                );
                match &info.state {
                    ContainerState::Exited {
                        started_at: None, ..
                    } => {
                        self.ctx.events.pod(
                            &self.pod,
                            Some(&c.name),
                            "Warning",
                            "Failed",
                            format!("Error: failed to start container \"{}\"", c.name),
                        );
                    }
                    _ => {
                        self.ctx.events.pod(
                            &self.pod,
                            Some(&c.name),
                            "Normal",
                            "Started",
                            format!("Started container {}", c.name),
                        );
                        self.post_start(c, &info).await;
                    }
                }
                self.changed.notify_one();
            }
            Err(RuntimeError::ImagePull(message)) => {
                let key = format!("{}/pull", self.backoff_key(&c.name));
                let now = jiff::Timestamp::now();
                self.ctx.backoff.lock().expect("backoff").next(&key, now);
                self.pull_failed.insert(c.name.clone(), now);
                self.ctx.events.pod(
                    &self.pod,
                    Some(&c.name),
                    "Warning",
                    "Failed",
                    format!("Failed to pull image \"{image}\": {message}"),
                );
                self.ctx.events.pod(
                    &self.pod,
                    Some(&c.name),
                    "Warning",
                    "Failed",
                    "Error: ErrImagePull",
                );
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "ErrImagePull".into(),
                        message,
                    },
                );
                self.changed_after(Duration::from_secs(1));
            }
            Err(RuntimeError::Config(message)) => self.config_error(c, message),
            Err(e) => {
                self.ctx.events.pod(
                    &self.pod,
                    Some(&c.name),
                    "Warning",
                    "Failed",
                    format!("Error: {e}"),
                );
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "RunContainerError".into(),
                        message: e.to_string(),
                    },
                );
                self.changed_after(Duration::from_secs(5));
            }
        }
    }

    fn config_error(&mut self, c: &Container, message: String) {
        if self
            .waiting
            .get(&c.name)
            .is_none_or(|w| w.message != message)
        {
            self.ctx.events.pod(
                &self.pod,
                Some(&c.name),
                "Warning",
                "Failed",
                message.clone(),
            );
        }
        self.waiting.insert(
            c.name.clone(),
            Waiting {
                reason: "CreateContainerConfigError".into(),
                message,
            },
        );
        self.changed_after(Duration::from_secs(5));
    }

    /// Wake the worker after `d`.
    fn changed_after(&self, d: Duration) {
        let notify = self.changed.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            notify.notify_one();
        });
    }

    async fn run_handler(
        &self,
        c: &Container,
        info: &ContainerInfo,
        handler: &LifecycleHandler,
        timeout: Duration,
    ) -> Outcome {
        let ip = self
            .sandbox
            .as_ref()
            .map(|s| s.ip.clone())
            .unwrap_or_default();
        if let Some(e) = &handler.exec {
            run_exec(self.ctx.runtime.as_ref(), &info.id, e, timeout).await
        } else if let Some(h) = &handler.http_get {
            run_http(&ip, h, c, timeout).await
        } else if let Some(t) = &handler.tcp_socket {
            run_tcp(&ip, t, c, timeout).await
        } else if let Some(s) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
            Outcome::Success
        } else {
            Outcome::Failure("lifecycle hook has no handler".into())
        }
    }

    async fn post_start(&mut self, c: &Container, info: &ContainerInfo) {
        let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return;
        };
        if let Outcome::Failure(message) = self
            .run_handler(c, info, handler, Duration::from_secs(30))
            .await
        {
            self.ctx.events.pod(
                &self.pod,
                Some(&c.name),
                "Warning",
                "FailedPostStartHook",
                message,
            );
            let _ = self
                .ctx
                .runtime
                .stop_container(&info.id, Duration::from_secs(0))
                .await;
        }
    }

    /// Stop one container: preStop hook, then SIGTERM, SIGKILL after what is left of `grace`.
    pub(crate) async fn stop_one(&self, c: &Container, info: &ContainerInfo, grace: Duration) {
        let begun = Instant::now();
        if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && let Outcome::Failure(message) = self.run_handler(c, info, handler, grace).await
        {
            self.ctx.events.pod(
                &self.pod,
                Some(&c.name),
                "Warning",
                "FailedPreStopHook",
                message,
            );
        }
        let left = grace.saturating_sub(begun.elapsed());
        if let Err(e) = self.ctx.runtime.stop_container(&info.id, left).await {
            tracing::warn!(error = %e, container = %c.name, "stopping container failed");
        }
    }
}
