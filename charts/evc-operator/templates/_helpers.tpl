{{/* The chart name, or nameOverride. */}}
{{- define "evc-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, or the release name followed by the
chart name unless the release name contains it ("evc-operator" stays "evc-operator", so the
default install names its objects as config/ does). Cluster-scoped objects (ClusterRoles,
ClusterRoleBindings) carry it too, so two releases never share them.
*/}}
{{- define "evc-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "evc-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "evc-operator.labels" -}}
helm.sh/chart: {{ include "evc-operator.chart" . }}
{{ include "evc-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "evc-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "evc-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as and its Roles bind to. Never the namespace's
"default" by accident: with serviceAccount.create=false a name must be given, since every
pod of the namespace that names no ServiceAccount runs as "default", and would get the
operator's rights.
*/}}
{{- define "evc-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "evc-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.create=false needs serviceAccount.name: the existing ServiceAccount to run as and bind the operator's Roles to (the chart never binds them to the namespace's \"default\" ServiceAccount by accident: every pod that names none runs as it)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "evc-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The namespaces to serve, without duplicates; empty means all namespaces.
Returned as a JSON list: include "evc-operator.watchNamespaces" . | fromJsonArray
*/}}
{{- define "evc-operator.watchNamespaces" -}}
{{- .Values.watchNamespaces | default list | uniq | toJson }}
{{- end }}

{{/*
The first document of a file under files/, which `make manifests` copies from config/
(files/rbac/cluster_role.yaml is config/rbac/cluster_role.yaml, and so on), as YAML.
Fails if the file or its rules are missing.
Usage: include "evc-operator.document" (list $ "files/rbac/cluster_role.yaml") | fromYaml
*/}}
{{- define "evc-operator.document" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
{{- $text := $root.Files.Get $path }}
{{- if not $text }}
{{- fail (printf "%s is missing from the chart: run `make manifests`" $path) }}
{{- end }}
{{- $document := regexSplit "(?m)^---\\s*$" $text -1 | first | fromYaml }}
{{- if or (hasKey $document "Error") (not $document.rules) }}
{{- fail (printf "%s has no rules: %v" $path ($document.Error | default "empty")) }}
{{- end }}
{{- toYaml $document }}
{{- end }}

{{/*
The rules of the first document of a file under files/: the chart grants exactly what the
kustomize manifests grant. One difference: a rule naming the Lease (config/ names the
operator's default Lease, evc-operator) names this release's Lease, <fullname>.
A third element "withoutLeases" leaves the Lease's rules out: a served namespace's Role
(config/rbac-namespaced/role.yaml serves the namespace the operator runs in, Lease
included); the chart grants the Lease in the release's namespace only, with a Role of its
own when leaderElection is on.
Usage: include "evc-operator.rules" (list $ "files/rbac/cluster_role.yaml")
       include "evc-operator.rules" (list $ "files/rbac-namespaced/role.yaml" "withoutLeases")
*/}}
{{- define "evc-operator.rules" -}}
{{- $root := index . 0 }}
{{- $withoutLeases := and (gt (len .) 2) (eq (index . 2) "withoutLeases") }}
{{- $document := include "evc-operator.document" (list $root (index . 1)) | fromYaml }}
{{- $rules := list }}
{{- range $document.rules }}
{{- if and $withoutLeases (has "leases" .resources) }}
{{- continue }}
{{- end }}
{{- if and (hasKey . "resourceNames") (has "leases" .resources) }}
{{- $_ := set . "resourceNames" (list (include "evc-operator.fullname" $root)) }}
{{- end }}
{{- if and (hasKey . "resourceNames") (has "secrets" .resources) }}
{{- $_ := set . "resourceNames" (list (printf "%s-signing-key" (include "evc-operator.fullname" $root))) }}
{{- end }}
{{- $rules = append $rules . }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/*
The rules for userKinds (USER_KINDS), as YAML; nothing when it is empty: list and watch on
each listed custom resource, written plural.version.group (workflows.v1alpha1.argoproj.io:
the group argoproj.io, the resource workflows). The only rules the templates write
themselves: config/ lists no custom kind, the install chooses them. Added to the
ClusterRole, or with watchNamespaces to each served namespace's Role. The schema refuses
a malformed entry first; this says why if the schema is skipped, and refuses a resource
listed twice (in two versions), as the operator does.
Usage: include "evc-operator.userKindRules" .
*/}}
{{- define "evc-operator.userKindRules" -}}
{{- $rules := list }}
{{- $seen := dict }}
{{- range .Values.userKinds }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?\\.v[0-9]+((alpha|beta)[0-9]+)?\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$" .) }}
{{- fail (printf "userKinds: %q is not a resource written as plural.version.group (for example workflows.v1alpha1.argoproj.io)" .) }}
{{- end }}
{{- $parts := splitn "." 3 . }}
{{- $resource := printf "%s.%s" $parts._0 $parts._2 }}
{{- if hasKey $seen $resource }}
{{- fail (printf "userKinds: %q: %s is listed twice" . $resource) }}
{{- end }}
{{- $_ := set $seen $resource true }}
{{- $rules = append $rules (dict "apiGroups" (list $parts._2) "resources" (list $parts._0) "verbs" (list "list" "watch")) }}
{{- end }}
{{- with $rules }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
extraEnv, as YAML; nothing when it is empty. A variable the chart sets itself is refused
with the value that sets it: two entries of one name in a container's env leave the last
one in force, silently, and USER_KINDS set there would have no list and watch granted.
Usage: include "evc-operator.extraEnv" .
*/}}
{{- define "evc-operator.extraEnv" -}}
{{- $own := dict "EXPIRY_PERIOD" "expiryPeriod" "GRACE_PERIOD" "gracePeriod" "MIN_PERIOD" "minPeriod" "MAX_PERIOD" "maxPeriod" "COUNTDOWN_INTERVAL" "countdownInterval" "DRY_RUN" "dryRun" "LIFECYCLE_EVENTS" "lifecycleEvents" "USER_KINDS" "userKinds (which also grants list and watch on each kind)" "METRICS_PORT" "metrics.port and metrics.enabled" "METRICS_ADDRESS" "the chart (all interfaces, for the probes and Prometheus)" "SIGNING_KEY_SECRET" "the chart (its signing-key Secret)" "SIGNING_KEY_NAMESPACE" "the chart (its signing-key Secret)" "LEADER_ELECTION" "leaderElection" "LEASE_NAME" "leaderElection" "POD_NAME" "leaderElection" "POD_NAMESPACE" "leaderElection" }}
{{- range .Values.extraEnv }}
{{- if hasKey $own (toString .name) }}
{{- fail (printf "extraEnv: %s is set by the chart; set it with %s" .name (get $own (toString .name))) }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "evc-operator.subjects" -}}
- kind: ServiceAccount
  name: {{ include "evc-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
The PromQL label matchers of this release's operator pods, as Prometheus labels their
series when a ServiceMonitor or PodMonitor scrapes them (namespace and pod of the target).
prometheusRule.selector replaces them (e.g. for another way of scraping).
*/}}
{{- define "evc-operator.metricSelector" -}}
{{- .Values.prometheusRule.selector | default (printf "namespace=%q, pod=~%q" .Release.Namespace (printf "%s-[a-z0-9]+-[a-z0-9]+" (include "evc-operator.fullname" .))) }}
{{- end }}

{{/* The scrape settings shared by the ServiceMonitor and the PodMonitor endpoints. */}}
{{- define "evc-operator.scrapeEndpoint" -}}
port: metrics
path: /metrics
{{- with .interval }}
interval: {{ . }}
{{- end }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
{{- end }}
