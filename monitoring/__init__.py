"""A picture of the chart's Grafana dashboard without Grafana (`python -m monitoring`).

The operator runs on the project's control plane, a Prometheus server scrapes it, each
panel's own query is evaluated by that Prometheus, and the answers are drawn as an SVG in
the dashboard's layout (docs/dashboard.svg). A developer tool: nothing here is part of the
operator or its image.
"""
