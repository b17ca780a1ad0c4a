"""The Streamlit dashboard over a runs folder: `streamlit_app.py` routes to thin `pages/`;
`runs.py` finds models, corpora, activation files and reports and builds the `workbench`
commands of missing analyses; `compute.py` and `figures.py` hold the pages' logic and plots;
`ui.py` the cached model and shared widgets; `serve.py` and `cli.py` are `workbench app`."""
