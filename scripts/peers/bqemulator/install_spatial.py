"""Installs DuckDB's spatial extension from the duckdb-extension-spatial wheel, without network.

bqemulator runs `INSTALL spatial; LOAD spatial` at every start and refuses to start without it. DuckDB
skips the download when the extension is already in its extension folder (under $HOME/.duckdb), so the
peer script runs this once with the same HOME it later gives the emulator.
"""

import pathlib
import sys

import duckdb
import duckdb_extension_spatial

extension = (
    pathlib.Path(duckdb_extension_spatial.__file__).parent
    / "extensions"
    / f"v{duckdb.__version__}"
    / "spatial.duckdb_extension"
)
if not extension.is_file():
    sys.exit(f"the duckdb-extension-spatial wheel has no extension for DuckDB {duckdb.__version__}: {extension}")

connection = duckdb.connect()
connection.execute(f"INSTALL '{extension}'")
connection.execute("LOAD spatial")
row = connection.execute(
    "SELECT install_path FROM duckdb_extensions() WHERE extension_name = 'spatial' AND loaded"
).fetchone()
if row is None:
    sys.exit("spatial extension did not load after installing it")
print(f"spatial extension installed at {row[0]}")
