"""In-context learning: how a model's answers change with demonstrations in its context
(`workbench icl`; `icl.measure` does the work)."""
