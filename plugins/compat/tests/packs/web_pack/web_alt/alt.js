console.log("alt");
