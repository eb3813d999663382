{{- define "alb.image" -}}
{{- $img := index .root.Values.global.images .name -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- if .root.Values.global.registry.address -}}
{{ .root.Values.global.registry.address }}/{{ $img.repository }}:{{ $tag }}
{{- else -}}
{{ $img.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* The default ALB's spec.config: every value except the chart-only keys. */}}
{{- define "alb.config" -}}
{{- $cfg := omit .Values "global" "alaudaConsole" "prometheus" -}}
{{- $_ := set $cfg "loadbalancerName" .Values.loadbalancerName -}}
{{- toYaml $cfg -}}
{{- end -}}
