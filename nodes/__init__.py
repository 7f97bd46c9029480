"""ComfyUI node classes (V1 API). This is the only layer that talks to the host.

One node (or one small family of nodes) per file; the maths lives in pata/, attention/ and pacm/.
The mappings below are literal dicts so that ComfyUI-Manager and the registry can read them statically.
"""

NODE_CLASS_MAPPINGS = {
}

NODE_DISPLAY_NAME_MAPPINGS = {
}
