"""A pack with HTTP routes and WebSocket messages, as ComfyUI pack authors write them."""

import server
from aiohttp import web
from server import PromptServer

routes = PromptServer.instance.routes
STORE = {}


@routes.get("/routes_pack/hello")
async def hello(request):
    name = request.rel_url.query.get("name", "world")
    return web.json_response({"hello": name, "method": request.method})


@routes.post("/routes_pack/store/{key}")
async def store(request):
    body = await request.json()
    STORE[request.match_info["key"]] = body
    PromptServer.instance.send_sync("routes_pack.stored", {"key": request.match_info["key"], "value": body})
    return web.json_response({"stored": request.match_info["key"]}, status=201)


@routes.post("/routes_pack/load")
async def load(request):
    import nodes

    body = await request.json()
    return web.json_response({"loaded": nodes.load_custom_node(body["path"]),
                              "dirs": sorted(nodes.LOADED_MODULE_DIRS)})


@routes.get("/routes_pack/last")
async def last(request):
    srv = PromptServer.instance
    return web.json_response({"client_id": srv.client_id, "last_node_id": srv.last_node_id,
                              "last_prompt_id": srv.last_prompt_id})


@routes.get("/routes_pack/store/{key}")
async def fetch(request):
    key = request.match_info["key"]
    if key not in STORE:
        raise web.HTTPNotFound(text=f"no {key}")
    return web.Response(text=str(STORE[key]["value"]), content_type="text/plain")


@routes.post("/routes_pack/upload")
async def upload(request):
    post = await request.post()
    image = post.get("image")
    return web.json_response({"filename": image.filename, "size": len(image.file.read()),
                              "note": post.get("note")})


def _rewrite(json_data):
    prompt = json_data.get("prompt", {})
    for node in prompt.values():
        if node.get("class_type") == "RoutesPing" and node["inputs"].get("message") == "rewrite-me":
            node["inputs"]["message"] = "rewritten"
    return json_data


PromptServer.instance.add_on_prompt_handler(_rewrite)


class RoutesPing:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"message": ("STRING", {"default": "ping"})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "ping"
    OUTPUT_NODE = True
    CATEGORY = "routes_pack"

    def ping(self, message, unique_id):
        srv = server.PromptServer.instance
        srv.send_sync("routes_pack.ping", {"message": message, "node": unique_id,
                                           "last_node_id": srv.last_node_id}, srv.client_id)
        srv.send_progress_text(f"said {message}", unique_id)
        return {"ui": {"text": [message]}, "result": (message,)}


NODE_CLASS_MAPPINGS = {"RoutesPing": RoutesPing}


# Packs also build their own RouteTableDef and add it to the app, serve a
# static folder and hook the app's start-up.
import os  # noqa: E402

extra = web.RouteTableDef()
STARTED = []


@extra.get("/routes_pack/extra/{tail:.*}")
async def extra_handler(request):
    return web.json_response({"tail": request.match_info["tail"], "started": STARTED})


async def _on_startup(app):
    STARTED.append(True)


PromptServer.instance.app.add_routes(extra)
PromptServer.instance.app.router.add_static("/routes_pack/static", os.path.join(os.path.dirname(__file__), "static"))
PromptServer.instance.app.on_startup.append(_on_startup)
