//! The kube-state-metrics families Skiff exports: name, help, type. Every family is written
//! (headers included) at every scrape, in this order, even when it has no samples.

/// (name, help, type).
pub(crate) const FAMILIES: &[(&str, &str, &str)] = &[
    ("kube_pod_info", "Information about pod.", "gauge"),
    (
        "kube_pod_owner",
        "Information about the Pod's owner.",
        "gauge",
    ),
    ("kube_pod_created", "Unix creation timestamp", "gauge"),
    (
        "kube_pod_start_time",
        "Start time in unix timestamp for a pod.",
        "gauge",
    ),
    ("kube_pod_status_phase", "The pods current phase.", "gauge"),
    (
        "kube_pod_status_ready",
        "Describes whether the pod is ready to serve requests.",
        "gauge",
    ),
    (
        "kube_pod_status_scheduled",
        "Describes the status of the scheduling process for the pod.",
        "gauge",
    ),
    (
        "kube_pod_container_info",
        "Information about a container in a pod.",
        "gauge",
    ),
    (
        "kube_pod_container_status_ready",
        "Describes whether the containers readiness check succeeded.",
        "gauge",
    ),
    (
        "kube_pod_container_status_running",
        "Describes whether the container is currently in running state.",
        "gauge",
    ),
    (
        "kube_pod_container_status_waiting",
        "Describes whether the container is currently in waiting state.",
        "gauge",
    ),
    (
        "kube_pod_container_status_waiting_reason",
        "Describes the reason the container is currently in waiting state.",
        "gauge",
    ),
    (
        "kube_pod_container_status_terminated",
        "Describes whether the container is currently in terminated state.",
        "gauge",
    ),
    (
        "kube_pod_container_status_terminated_reason",
        "Describes the reason the container is currently in terminated state.",
        "gauge",
    ),
    (
        "kube_pod_container_status_last_terminated_reason",
        "Describes the last reason the container was in terminated state.",
        "gauge",
    ),
    (
        "kube_pod_container_status_restarts_total",
        "The number of container restarts per container.",
        "counter",
    ),
    (
        "kube_pod_container_resource_requests",
        "The number of requested request resource by a container. It is recommended to use the kube_pod_resource_requests metric exposed by kube-scheduler instead, as it is more precise.",
        "gauge",
    ),
    (
        "kube_pod_container_resource_limits",
        "The number of requested limit resource by a container. It is recommended to use the kube_pod_resource_limits metric exposed by kube-scheduler instead, as it is more precise.",
        "gauge",
    ),
    (
        "kube_deployment_created",
        "Unix creation timestamp",
        "gauge",
    ),
    (
        "kube_deployment_spec_replicas",
        "Number of desired pods for a deployment.",
        "gauge",
    ),
    (
        "kube_deployment_spec_paused",
        "Whether the deployment is paused and will not be processed by the deployment controller.",
        "gauge",
    ),
    (
        "kube_deployment_status_replicas",
        "The number of replicas per deployment.",
        "gauge",
    ),
    (
        "kube_deployment_status_replicas_ready",
        "The number of ready replicas per deployment.",
        "gauge",
    ),
    (
        "kube_deployment_status_replicas_available",
        "The number of available replicas per deployment.",
        "gauge",
    ),
    (
        "kube_deployment_status_replicas_unavailable",
        "The number of unavailable replicas per deployment.",
        "gauge",
    ),
    (
        "kube_deployment_status_replicas_updated",
        "The number of updated replicas per deployment.",
        "gauge",
    ),
    (
        "kube_deployment_status_observed_generation",
        "The generation observed by the deployment controller.",
        "gauge",
    ),
    (
        "kube_deployment_status_condition",
        "The current status conditions of a deployment.",
        "gauge",
    ),
    (
        "kube_deployment_metadata_generation",
        "Sequence number representing a specific generation of the desired state.",
        "gauge",
    ),
    (
        "kube_replicaset_owner",
        "Information about the ReplicaSet's owner.",
        "gauge",
    ),
    (
        "kube_replicaset_spec_replicas",
        "Number of desired pods for a ReplicaSet.",
        "gauge",
    ),
    (
        "kube_replicaset_status_replicas",
        "The number of replicas per ReplicaSet.",
        "gauge",
    ),
    (
        "kube_replicaset_status_ready_replicas",
        "The number of ready replicas per ReplicaSet.",
        "gauge",
    ),
    (
        "kube_replicaset_status_observed_generation",
        "The generation observed by the ReplicaSet controller.",
        "gauge",
    ),
    (
        "kube_replicaset_metadata_generation",
        "Sequence number representing a specific generation of the desired state.",
        "gauge",
    ),
    (
        "kube_daemonset_status_current_number_scheduled",
        "The number of nodes running at least one daemon pod and are supposed to.",
        "gauge",
    ),
    (
        "kube_daemonset_status_desired_number_scheduled",
        "The number of nodes that should be running the daemon pod.",
        "gauge",
    ),
    (
        "kube_daemonset_status_number_available",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available",
        "gauge",
    ),
    (
        "kube_daemonset_status_number_misscheduled",
        "The number of nodes running a daemon pod but are not supposed to.",
        "gauge",
    ),
    (
        "kube_daemonset_status_number_ready",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
        "gauge",
    ),
    (
        "kube_daemonset_status_number_unavailable",
        "The number of nodes that should be running the daemon pod and have none of the daemon pod running and available",
        "gauge",
    ),
    (
        "kube_daemonset_status_updated_number_scheduled",
        "The total number of nodes that are running updated daemon pod",
        "gauge",
    ),
    (
        "kube_daemonset_status_observed_generation",
        "The most recent generation observed by the daemon set controller.",
        "gauge",
    ),
    (
        "kube_daemonset_metadata_generation",
        "Sequence number representing a specific generation of the desired state.",
        "gauge",
    ),
    (
        "kube_statefulset_replicas",
        "Number of desired pods for a StatefulSet.",
        "gauge",
    ),
    (
        "kube_statefulset_status_replicas",
        "The number of replicas per StatefulSet.",
        "gauge",
    ),
    (
        "kube_statefulset_status_replicas_ready",
        "The number of ready replicas per StatefulSet.",
        "gauge",
    ),
    (
        "kube_statefulset_status_replicas_current",
        "The number of current replicas per StatefulSet.",
        "gauge",
    ),
    (
        "kube_statefulset_status_replicas_updated",
        "The number of updated replicas per StatefulSet.",
        "gauge",
    ),
    (
        "kube_statefulset_status_observed_generation",
        "The generation observed by the StatefulSet controller.",
        "gauge",
    ),
    (
        "kube_statefulset_metadata_generation",
        "Sequence number representing a specific generation of the desired state for the StatefulSet.",
        "gauge",
    ),
    ("kube_job_info", "Information about job.", "gauge"),
    (
        "kube_job_owner",
        "Information about the Job's owner.",
        "gauge",
    ),
    (
        "kube_job_spec_completions",
        "The desired number of successfully finished pods the job should be run with.",
        "gauge",
    ),
    (
        "kube_job_spec_parallelism",
        "The maximum desired number of pods the job should run at any given time.",
        "gauge",
    ),
    (
        "kube_job_status_active",
        "The number of actively running pods.",
        "gauge",
    ),
    (
        "kube_job_status_succeeded",
        "The number of pods which reached Phase Succeeded.",
        "gauge",
    ),
    (
        "kube_job_status_failed",
        "The number of pods which reached Phase Failed and the reason for failure.",
        "gauge",
    ),
    (
        "kube_job_complete",
        "The job has completed its execution.",
        "gauge",
    ),
    (
        "kube_job_failed",
        "The job has failed its execution.",
        "gauge",
    ),
    (
        "kube_node_info",
        "Information about a cluster node.",
        "gauge",
    ),
    ("kube_node_created", "Unix creation timestamp", "gauge"),
    (
        "kube_node_spec_unschedulable",
        "Whether a node can schedule new pods.",
        "gauge",
    ),
    (
        "kube_node_spec_taint",
        "The taint of a cluster node.",
        "gauge",
    ),
    (
        "kube_node_status_condition",
        "The condition of a cluster node.",
        "gauge",
    ),
    (
        "kube_node_status_capacity",
        "The capacity for different resources of a node.",
        "gauge",
    ),
    (
        "kube_node_status_allocatable",
        "The allocatable for different resources of a node that are available for scheduling.",
        "gauge",
    ),
    ("kube_namespace_created", "Unix creation timestamp", "gauge"),
    (
        "kube_namespace_status_phase",
        "kubernetes namespace status phase.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_info",
        "Information about this autoscaler.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_metadata_generation",
        "The generation observed by the HorizontalPodAutoscaler controller.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "Lower limit for the number of pods that can be set by the autoscaler, default 1.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "Upper limit for the number of pods that can be set by the autoscaler; cannot be smaller than MinReplicas.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_spec_target_metric",
        "The metric specifications used by this autoscaler when calculating the desired replica count.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_status_target_metric",
        "The current metric status used by this autoscaler when calculating the desired replica count.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_status_current_replicas",
        "Current number of replicas of pods managed by this autoscaler.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "Desired number of replicas of pods managed by this autoscaler.",
        "gauge",
    ),
    (
        "kube_horizontalpodautoscaler_status_condition",
        "The condition of this autoscaler.",
        "gauge",
    ),
];
