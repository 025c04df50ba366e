// The HTML 404 page for browsers (static/404.html): the site's header and a way back to the map.

import { mountShell } from "./shell.js";

mountShell();
