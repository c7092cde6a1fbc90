{{/* The chart name, or nameOverride. */}}
{{- define "wasm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: fullnameOverride, or the release name followed by the chart name unless
it already contains it. Kept to 50 characters so that suffixes such as "-controller" fit in 63. */}}
{{- define "wasm-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "wasm-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wasm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wasm-operator
{{- end }}

{{/* Labels that select the release's pods; add app.kubernetes.io/component for one component. */}}
{{- define "wasm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wasm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount name of a component: (dict "ctx" $ "component" "controller"). */}}
{{- define "wasm-operator.serviceAccountName" -}}
{{- $sa := (index .ctx.Values .component).serviceAccount }}
{{- if $sa.create }}
{{- default (printf "%s-%s" (include "wasm-operator.fullname" .ctx) .component) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* The manager image reference. */}}
{{- define "wasm-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The cache claim's name. */}}
{{- define "wasm-operator.cacheClaim" -}}
{{- default (printf "%s-cache" (include "wasm-operator.fullname" .)) .Values.cache.existingClaim }}
{{- end }}

{{/* Pod security context shared by the controller and the hosts: non-root (the image's user 65532), the
cache volume group-writable by that user, the runtime's default seccomp profile. */}}
{{- define "wasm-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context: read-only root filesystem, no privilege escalation, no capabilities. */}}
{{- define "wasm-operator.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
{{- end }}

{{/*
The Secret holding the hosts' serving certificate (tls.crt, tls.key): made by the chart, by cert-manager, or
named by the user.
*/}}
{{- define "wasm-operator.hostTLSSecret" -}}
{{- required "host.tls.mode secret needs host.tls.secretName: a kubernetes.io/tls Secret in the release namespace" .Values.host.tls.secretName -}}
{{- end }}

{{- /* The controller signs each host's own serving certificate (modes generate and certManager). */}}
{{- define "wasm-operator.hostSigner" -}}
{{- has .Values.host.tls.mode (list "generate" "certManager") -}}
{{- end }}

{{- define "wasm-operator.hostSignerName" -}}
wasm-operator.dev/{{ .Release.Namespace }}.{{ include "wasm-operator.fullname" . }}-host
{{- end }}

{{- /* The Secret holding the signer's CA. */}}
{{- define "wasm-operator.hostCASecret" -}}
{{- include "wasm-operator.fullname" . }}-host-ca-key
{{- end }}

{{- /* The Secret of the CAs the signer used before, while valid. */}}
{{- define "wasm-operator.hostCAHistorySecret" -}}
{{- include "wasm-operator.fullname" . }}-host-ca-history
{{- end }}

{{- /* The host Service's DNS names: the only names of a host certificate, comma-separated. */}}
{{- define "wasm-operator.hostDNSNames" -}}
{{- $svc := printf "%s-host" (include "wasm-operator.fullname" .) -}}
{{- $svc }},{{ $svc }}.{{ .Release.Namespace }},{{ $svc }}.{{ .Release.Namespace }}.svc,{{ $svc }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{/* The init container that gives a cache volume's root to the pods' user (cache.setOwner): fsGroup is
ignored by hostPath, local and many NFS volumes. Root with CAP_CHOWN and CAP_FOWNER only; it changes the
root folder alone, when its owner differs. Called with (dict "ctx" $ "volume" <volume name> "path" <mount
path>): the controller's shared cache, or a host's node-local compile cache (the host mounts the shared one
read-only and never changes it). */}}
{{- define "wasm-operator.cacheOwnerInit" -}}
{{- $ctx := .ctx }}
{{- if $ctx.Values.cache.setOwner }}
initContainers:
  - name: cache-owner
    image: {{ include "wasm-operator.image" $ctx }}
    imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
    args:
      - init-cache
      - --cache-dir={{ .path }}
      - --uid=65532
      - --gid=65532
    securityContext:
      runAsNonRoot: false
      runAsUser: 0
      runAsGroup: 0
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      privileged: false
      capabilities:
        drop:
          - ALL
        add:
          - CHOWN
          - FOWNER
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
      limits:
        memory: 64Mi
    volumeMounts:
      - name: {{ .volume }}
        mountPath: {{ .path }}
{{- end }}
{{- end }}

{{/* Whole seconds of a Go duration of the forms the schema allows for it (5s, 1m, 1m30s, 500ms), rounded
up. */}}
{{- define "wasm-operator.seconds" -}}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9.]+(ms|s|m|h)" . -1 }}
{{- $n := float64 (regexFind "^[0-9.]+" .) }}
{{- $unit := trimPrefix (regexFind "^[0-9.]+" .) . }}
{{- $mult := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total = addf $total (mulf $n (get $mult $unit)) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}
