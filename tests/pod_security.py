"""The Kubernetes Pod Security Standards' "restricted" level, checked on a pod spec the way the PodSecurity admission
controller does (kubernetes.io/docs/concepts/security/pod-security-standards, policy version latest: every baseline
control plus the restricted ones), so that a manifest a restricted namespace would refuse fails a test instead.
No Python package implements the standard (the reference is Go: k8s.io/pod-security-admission); each control below is
the documented rule, over containers, initContainers and ephemeralContainers alike.
"""
from __future__ import annotations

# baseline: capabilities a container may add
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# restricted: the only volume types
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
VOLUME_KEYS_THAT_ARE_NOT_TYPES = {"name"}


def containers(spec: dict) -> list[dict]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(key, [])]


def restricted_violations(spec: dict, annotations: dict | None = None) -> list[str]:
    """What keeps a pod with this spec (and metadata annotations) out of a restricted namespace; [] if nothing."""
    problems = []
    pod = spec.get("securityContext", {})
    every = containers(spec)

    def each(predicate, message):
        for container in every:
            value = container.get("securityContext", {})
            if predicate(value):
                problems.append(f"{container['name']}: {message}")

    # -- baseline ---------------------------------------------------------------------------------------------------
    if pod.get("windowsOptions", {}).get("hostProcess"):
        problems.append("pod: windowsOptions.hostProcess")
    each(lambda sc: sc.get("windowsOptions", {}).get("hostProcess"), "windowsOptions.hostProcess")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"pod: {key}")
    each(lambda sc: sc.get("privileged"), "privileged")
    each(lambda sc: set(sc.get("capabilities", {}).get("add", [])) - BASELINE_CAPABILITIES,
         "adds capabilities beyond the baseline set")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"volume {volume['name']}: hostPath")
    for container in every:
        for port in container.get("ports", []):
            if port.get("hostPort", 0):
                problems.append(f"{container['name']}: hostPort {port['hostPort']}")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            problems.append(f"annotation {key}: {value}")
    for where, context in [("pod", pod)] + [(c["name"], c.get("securityContext", {})) for c in every]:
        if context.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: appArmorProfile {context['appArmorProfile']['type']}")
        selinux = context.get("seLinuxOptions", {})
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            problems.append(f"{where}: seLinuxOptions {selinux}")
        if context.get("seccompProfile", {}).get("type") == "Unconfined":
            problems.append(f"{where}: seccompProfile Unconfined")
    each(lambda sc: sc.get("procMount", "Default") != "Default", "procMount other than Default")
    for sysctl in pod.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"pod: sysctl {sysctl['name']}")

    # -- restricted -------------------------------------------------------------------------------------------------
    for volume in spec.get("volumes", []):
        kinds = set(volume) - VOLUME_KEYS_THAT_ARE_NOT_TYPES
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds - RESTRICTED_VOLUMES)}")
    each(lambda sc: sc.get("allowPrivilegeEscalation") is not False,
         "allowPrivilegeEscalation must be false")
    pod_non_root = pod.get("runAsNonRoot") is True
    each(lambda sc: sc.get("runAsNonRoot") is False or (
        not pod_non_root and sc.get("runAsNonRoot") is not True), "runAsNonRoot must be true (pod or container)")
    if pod.get("runAsUser") == 0:
        problems.append("pod: runAsUser 0")
    each(lambda sc: sc.get("runAsUser") == 0, "runAsUser 0")
    pod_seccomp = pod.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")
    each(lambda sc: not pod_seccomp and sc.get("seccompProfile", {}).get("type") not in (
        "RuntimeDefault", "Localhost"), "seccompProfile RuntimeDefault or Localhost (pod or container)")
    each(lambda sc: "ALL" not in sc.get("capabilities", {}).get("drop", []),
         "capabilities must drop ALL")
    each(lambda sc: set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"},
         "may add only NET_BIND_SERVICE")
    return problems
