# ruff: noqa: E501, T201
"""Build and execute the notebooks in notebooks/ (outputs stored for nbval).

Run from the repository root with JUPYTER_SANDBOX_HOME pointing at a scratch folder.
"""

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell as code
from nbformat.v4 import new_markdown_cell as md
from nbformat.v4 import new_notebook

tour = new_notebook(
    cells=[
        md(
            "# jupyter-sandbox: the magics tour\n\nRun code in a hardened Docker sandbox from any notebook. "
            "Build the kernel image once (`jupyter-sandbox image build`), then load the extension:"
        ),
        code("%load_ext jupyter_sandbox"),
        md(
            "`%sandbox create` starts a sandbox (its own container and Python kernel: no network, "
            "a memory limit, an unprivileged user) and selects it for `%%sandbox` cells."
        ),
        code("# NBVAL_IGNORE_OUTPUT\n%sandbox create --name tour --memory 512m"),
        md("A `%%sandbox` cell runs in the sandbox; its output shows up here as it arrives."),
        code(
            "%%sandbox\nimport os, platform\nprint('user id', os.getuid(), 'on', platform.system())\n"
            "print('network interfaces:', sorted(os.listdir('/sys/class/net')))"
        ),
        md(
            "State persists between cells, and rich results (HTML tables, plots) come back as if the code ran locally."
        ),
        code(
            "%%sandbox\nimport pandas as pd\n\ndf = pd.DataFrame({'x': range(6), 'square': [v * v for v in range(6)]})\ndf"
        ),
        code(
            "%%sandbox\nimport matplotlib.pyplot as plt\n\nplt.figure(figsize=(4, 2.5))\n"
            "plt.plot(df.x, df.square, marker='o')\nplt.title('made inside the sandbox')\nplt.show()"
        ),
        md(
            "Files: code in the sandbox writes to `/mnt/data`; `%sandbox upload`, `download` and `files` "
            "move files across the boundary (`$name` expands a Python variable, as in any line magic)."
        ),
        code("%%sandbox\ndf.to_csv('/mnt/data/squares.csv', index=False)"),
        code(
            "import tempfile\n\nhere = tempfile.mkdtemp()\nwith open(f'{here}/notes.txt', 'w') as f:\n    f.write('written on the host\\n')"
        ),
        code("# NBVAL_IGNORE_OUTPUT\n%sandbox upload $here/notes.txt"),
        code("%sandbox files"),
        code("%%sandbox\nprint(open('/mnt/data/notes.txt').read())"),
        code("# NBVAL_IGNORE_OUTPUT\n%sandbox download /mnt/data/squares.csv $here/squares.csv"),
        code("print(open(f'{here}/squares.csv').read())"),
        md("An exception in the sandbox fails the cell, with the sandbox's traceback:"),
        code("%%sandbox\n# NBVAL_RAISES_EXCEPTION\n{'a': 1}['b']"),
        md(
            "A `--timeout` interrupts runaway code (the cell fails, the sandbox's kernel survives):"
        ),
        code("%%sandbox --timeout 1\n# NBVAL_RAISES_EXCEPTION\nwhile True:\n    pass"),
        code("%%sandbox\nprint('still here:', df.square.sum())"),
        md(
            "`%sandbox status` and `%sandbox list` show what is running and how long it has left; "
            "`%sandbox panel` shows the same as a widget. `%sandbox?` has the full help."
        ),
        code("# NBVAL_IGNORE_OUTPUT\n%sandbox status"),
        code("# NBVAL_IGNORE_OUTPUT\n%sandbox panel"),
        code("# NBVAL_IGNORE_OUTPUT\n%sandbox delete"),
    ]
)
tour.metadata["kernelspec"] = {
    "name": "python3",
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
}

lab = new_notebook(
    cells=[
        md(
            "# The sandboxed JupyterLab kernel\n\nThis notebook uses the **Python 3 (sandbox)** kernel: "
            "every cell runs in a hardened Docker sandbox. Install the package, build the image once "
            "(`jupyter-sandbox image build`), start `jupyter lab` and pick *Python 3 (sandbox)* in the "
            "launcher. Interrupt, restart (files kept, fresh kernel) and shutdown (sandbox deleted) "
            "work as usual. `jupyter sandbox kernelspec install --name py-net --network allow=pypi.org "
            "--memory 2g` adds more variants."
        ),
        code("import os\nprint('user id', os.getuid(), '| working folder', os.getcwd())"),
        code(
            "v2, v1 = '/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'\n"
            "limit = open(v2 if os.path.exists(v2) else v1).read().strip()\nprint('memory limit:', int(limit) // 2**20, 'MiB')"
        ),
        code(
            "import socket\ntry:\n    socket.create_connection(('pypi.org', 443), timeout=2)\nexcept OSError as exc:\n    print('no network:', type(exc).__name__)"
        ),
        code(
            "import numpy as np\nimport matplotlib.pyplot as plt\n\nx = np.linspace(0, 6.3, 200)\n"
            "plt.figure(figsize=(4, 2.5))\nplt.plot(x, np.sin(x))\nplt.title('plotted in the sandbox')\nplt.show()"
        ),
        code(
            "open('/mnt/data/notes.txt', 'w').write('kept across kernel restarts')\nprint(open('/mnt/data/notes.txt').read())"
        ),
    ]
)
lab.metadata["kernelspec"] = {
    "name": "python3-sandbox",
    "display_name": "Python 3 (sandbox)",
    "language": "python",
}

for name, nb in (("magics_tour.ipynb", tour), ("jupyterlab_kernel.ipynb", lab)):
    NotebookClient(
        nb, timeout=120, allow_errors=True, kernel_name=nb.metadata["kernelspec"]["name"]
    ).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, f"notebooks/{name}")
    print(name, "ok")
