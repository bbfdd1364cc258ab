"""The Jupyter surfaces, on the public `Client`: `magics` (`%load_ext jupyter_sandbox`, then
`%sandbox` / `%%sandbox`; `magics_snapshots` for snapshot and fork), `widgets` (the
`%sandbox panel`), `provisioner` (the `jupyter-sandbox` kernel provisioner: every kernel a
sandbox) with `kernel_relay` and its rules `relay_messages`, `kernelspec` (kernelspecs that
select the provisioner), and `output_safety` (untrusted MIME bundles made safe to render:
what the magics and the relay show).

Nothing is imported here, so a provisioner does not load IPython nor the magics ipywidgets.
"""
