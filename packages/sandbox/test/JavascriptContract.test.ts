import * as JavascriptSandbox from "../src/JavascriptSandbox.js"
import { replContractSuite } from "./ReplContract.js"

replContractSuite("JavascriptSandbox", JavascriptSandbox.layer())
