"""lmi-mount: Linux mounts managed through CIM/WBEM (the OpenLMI Mounting Model).

Layers, from the bottom (see ARCHITECTURE in docs/):

* ``mounts``  pure core: parsing, rendering, option tables, refcount state, plans;
* ``linux``   the only code that touches the machine, every path injected;
* ``engine``  the MountManager that executes plans against ``linux``;
* ``cim``     translation between the engine and CIM instances and methods;
* ``server``  CIM-XML over HTTP(S), moving bytes only.
"""

__version__ = "0.1.0"
